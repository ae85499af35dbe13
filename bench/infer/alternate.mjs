// How two builds of bench/wasm-profile's harness are timed against each other, in one place for
// both timers: profile-wasm.mjs --against (Node) and ab-chromium.mjs (a Chromium page, which gets
// this function's source, so it uses nothing outside itself).
//
// `a` and `b` are harness exports with the model loaded. After `warmMs` of both running (V8 tiers
// up), 15 groups each (400 runs at batch 1, 6 at larger batches; a page that is not cross-origin
// isolated reads performance.now() in 0.1 ms steps, hence groups), in alternating order (A B, B A,
// ...): each side's median ms per run and the median of the groups' ratios a / b.
export function alternate(a, b, batch, warmMs) {
  const reps = batch === 1 ? 400 : 6;
  const until = performance.now() + warmMs;
  while (performance.now() < until) { a.run(batch, 1); b.run(batch, 1); }
  // `run`: the session's own run, without the profile's timer and names per step
  const group = (h) => { const t0 = performance.now(); h.run(batch, reps); return (performance.now() - t0) / reps; };
  const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];
  const ta = [], tb = [], ratios = [];
  for (let round = 0; round < 15; round++) {
    let x, y;
    if (round % 2) { y = group(b); x = group(a); } else { x = group(a); y = group(b); }
    ta.push(x); tb.push(y); ratios.push(x / y);
  }
  return { a: median(ta), b: median(tb), ratio: median(ratios), reps, rounds: 15 };
}
