// How much of the machine OTHER processes used while a benchmark ran, as in bench/common.py's Timer:
// (busy CPU time of the whole machine − ours) / (wall × cores). "Ours" is this process plus, for
// Chromium, every process under it (browser, zygote, renderers, GPU/utility): their CPU time is read
// from /proc just before the browser closes, because renderers are reaped by Chromium's zygote and
// most of their time never reaches our own cutime.
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

const HZ = 100; // USER_HZ: /proc reports clock ticks of 1/100 s on Linux

/** Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat. */
function busySeconds() {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return (user + nice + system + irq + softirq + steal) / HZ;
}

/** [ppid, utime + stime, cutime + cstime] of a process, in seconds; null once it is gone. */
function procStat(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // the name may contain spaces
    return [Number(f[1]), (Number(f[11]) + Number(f[12])) / HZ, (Number(f[13]) + Number(f[14])) / HZ];
  } catch {
    return null;
  }
}

/** CPU seconds of every live descendant of `root` (their reaped children included). */
function descendantsSeconds(root) {
  const children = new Map();
  const stats = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = procStat(name);
    if (!s) continue;
    stats.set(Number(name), s);
    if (!children.has(s[0])) children.set(s[0], []);
    children.get(s[0]).push(Number(name));
  }
  let total = 0;
  const queue = [...(children.get(root) ?? [])];
  while (queue.length) {
    const pid = queue.pop();
    const [, own, reaped] = stats.get(pid);
    total += own + reaped;
    queue.push(...(children.get(pid) ?? []));
  }
  return total;
}

/**
 * Starts the clock. `beforeClosingChildren()`: call right before closing a browser this process
 * started (its processes' CPU time is counted then); `share()`: the share of all cores' time that
 * other processes took since the start.
 */
export function otherCpuShare() {
  const busy0 = busySeconds();
  const self0 = procStat(process.pid)[1];
  const t0 = performance.now();
  let children = 0;
  return {
    beforeClosingChildren() {
      children += descendantsSeconds(process.pid);
    },
    share() {
      const wall = Math.max((performance.now() - t0) / 1000, 1e-9);
      const other = busySeconds() - busy0 - (procStat(process.pid)[1] - self0) - children;
      return Math.round(Math.max(0, other / (wall * os.cpus().length)) * 1000) / 1000;
    },
  };
}
