// Prints a file's raw, gzip (level 9) and brotli (quality 11) sizes: what a browser downloads
// from a server that compresses. Node's zlib, so no extra tool is needed.
import { readFileSync } from 'node:fs';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';

const mb = (n) => `${(n / 1e6).toFixed(2)} MB`.padStart(9);
for (const file of process.argv.slice(2)) {
  const bytes = readFileSync(file);
  const gzip = gzipSync(bytes, { level: 9 }).length;
  const brotli = brotliCompressSync(bytes, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
  }).length;
  console.log(`${file.split('/').pop()}: raw ${mb(bytes.length)}   gzip ${mb(gzip)}   brotli ${mb(brotli)}`);
}
