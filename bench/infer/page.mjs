// Runs measure() in the page and hands the result to the driver as window.__bench (a promise).
// The query string says which engine (its entry module URL) and which model (file URL and input
// shape).
import { measure } from './measure.mjs';

const q = new URLSearchParams(location.search);
window.__bench = (async () => {
  const response = await fetch(q.get('file'));
  if (!response.ok) throw new Error(`cannot fetch the model ${q.get('file')}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  // `twin=NAME:URL`: a second model timed against this one (only on the full visit)
  let twin = null;
  if (q.has('twin') && !q.has('coldOnly')) {
    const [name, file] = q.get('twin').split(/:(.*)/s);
    const r = await fetch(file);
    if (!r.ok) throw new Error(`cannot fetch the twin model ${file}: HTTP ${r.status}`);
    twin = { name, bytes: new Uint8Array(await r.arrayBuffer()) };
  }
  return measure({
    engine: q.get('engine'),
    url: q.get('entry'),
    bytes,
    shape: q.get('shape').split(',').map(Number),
    quick: q.has('quick'),
    coldOnly: q.has('coldOnly'),
    twin,
  });
})();
