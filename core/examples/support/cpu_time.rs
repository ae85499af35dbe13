//! This thread's CPU time, for the profiling examples (`engine_profile`, `conv_kernels`): a busy
//! host's other processes and steal time stay out of it (mostly: caches are shared).

/// This thread's CPU time in milliseconds (Linux's `CLOCK_THREAD_CPUTIME_ID`).
#[cfg(target_os = "linux")]
pub fn thread_cpu_ms() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; the clock id is Linux's.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    assert!(ok, "clock_gettime");
    t.sec as f64 * 1e3 + t.nsec as f64 * 1e-6
}

#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_ms() -> f64 {
    panic!("cpu time: Linux only")
}
