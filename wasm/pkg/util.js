// What index.js (inference) and train.js (the Trainer) share: loading a wasm module once, reading
// bytes from any source, checking shapes, and turning a Rust panic into an Error. Private to the
// package.

export const isNode = typeof process === 'object' && typeof process.versions?.node === 'string';

/**
 * The one initialisation of a wasm-bindgen module, shared by every caller and retried after a
 * failure. `defaultUrl` is `new URL('./x_bg.wasm', import.meta.url)`, written in the caller's
 * file so that bundlers (Vite, webpack) see it and ship the .wasm next to the code.
 */
export function moduleLoader(initWasm, defaultUrl) {
  let ready = null;
  return function init(wasm) {
    if (ready === null) {
      ready = instantiate(initWasm, wasm, defaultUrl).catch((e) => {
        ready = null; // a failed download can be retried
        throw e;
      });
    }
    return ready;
  };
}

async function instantiate(initWasm, wasm, defaultUrl) {
  let source = wasm;
  if (isNode && (typeof source === 'string' || source instanceof URL) && !/^https?:/i.test(String(source))) {
    source = await readNodeFile(String(source).startsWith('file:') ? new URL(String(source)) : String(source));
  }
  if (source === undefined) {
    // Node's fetch cannot read file: URLs; a hidden dynamic import keeps bundlers from pulling
    // node:fs into a browser build.
    source =
      defaultUrl.protocol === 'file:' && isNode
        ? await readNodeFile(defaultUrl)
        : await fetchOk(defaultUrl, 'kiln-wasm: cannot fetch its WebAssembly file');
  }
  await initWasm({ module_or_path: source });
}

export async function readNodeFile(pathOrUrl) {
  const fs = await import(/* webpackIgnore: true */ /* @vite-ignore */ 'node:fs/promises');
  return fs.readFile(pathOrUrl);
}

export async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new Error(`${what} ${url}: ${e.message}`);
  }
  if (!response.ok) throw new Error(`${what} ${url}: HTTP ${response.status} ${response.statusText}`.trim());
  return response;
}

/** The bytes of a source: a URL or path string, URL, Response, Blob, ArrayBuffer or view. */
export async function sourceBytes(source, what = 'the model', caller = 'loadModel') {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (ArrayBuffer.isView(source)) return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`kiln-wasm: cannot load ${what} from ${source.url || 'a Response'}: HTTP ${source.status} ${source.statusText}`.trim());
    return new Uint8Array(await source.arrayBuffer());
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) return new Uint8Array(await source.arrayBuffer());
  if (typeof source === 'string' || source instanceof URL) {
    const text = String(source);
    // In Node a string is a file path unless it is an http(s) URL; in a page it is a URL.
    if (isNode && !/^(https?|data|blob):/i.test(text)) {
      try {
        return await readNodeFile(text.startsWith('file:') ? new URL(text) : text);
      } catch (e) {
        throw new Error(`kiln-wasm: cannot read ${what} file ${text}: ${e.message}`);
      }
    }
    const response = await fetchOk(text, `kiln-wasm: cannot fetch ${what} from`);
    return new Uint8Array(await response.arrayBuffer());
  }
  throw new TypeError(`kiln-wasm: ${caller} takes a URL string, Uint8Array, ArrayBuffer, Response or Blob, not ${describeValue(source)}`);
}

/**
 * A guard for calls into one wasm module. A Rust panic aborts the instance ("unreachable
 * executed"); the guard turns that into an Error with the panic's message and gives the module a
 * fresh instance so the package keeps working. `generation()` changes on every restart, so
 * objects made by the dead instance know they are gone.
 */
export function panicGuard(takeLastPanic, resetState) {
  let generation = 0;
  function guard(call) {
    try {
      return call();
    } catch (e) {
      if (!(e instanceof WebAssembly.RuntimeError)) throw e;
      let panic = null;
      try {
        panic = takeLastPanic();
      } catch {
        // the aborted instance could not even answer; the trap's own message will do
      }
      // Registry paths ("/root/.cargo/registry/src/index.crates.io-…/tract-core-0.23.9/src/…") say
      // nothing a user needs; keep the crate and file.
      panic = panic?.replace(/\S*\/registry\/src\/[^/]+\//g, '') ?? null;
      resetState();
      generation += 1;
      throw new Error(
        `kiln-wasm: internal error (${panic ?? `the engine aborted: ${e.message}; out of memory?`}). This is a bug in kiln or tract; please report it with the model. ` +
          'The engine has restarted: models loaded before this must be loaded again.',
        { cause: e },
      );
    }
  }
  return { guard, generation: () => generation };
}

export function describeValue(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an Array';
  if (typeof v === 'object') return v.constructor?.name ?? 'an object';
  return typeof v;
}

/** `dims` as a Uint32Array, after checking it is a list of whole sizes whose product is `length`. */
export function checkDims(name, dims, length) {
  if (!Array.isArray(dims) && !ArrayBuffer.isView(dims)) {
    throw new TypeError(`kiln-wasm: input "${name}": dims must be an array of sizes such as [1, 64], not ${describeValue(dims)}`);
  }
  // an indexed loop into a typed array: the iterator protocol and Uint32Array.from were a
  // twentieth of a small model's prediction in Node
  const shape = new Uint32Array(dims.length);
  let count = 1;
  for (let i = 0; i < dims.length; i++) {
    const d = Number(dims[i]);
    if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new TypeError(`kiln-wasm: input "${name}": dims [${[...dims].join(', ')}] must be whole numbers >= 0`);
    shape[i] = d;
    count *= d;
  }
  if (count !== length) {
    throw new Error(`kiln-wasm: input "${name}": dims [${[...dims].join(', ')}] need ${count} values, the data has ${length}`);
  }
  return shape;
}
