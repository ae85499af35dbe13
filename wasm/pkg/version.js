// The package's version: the workspace Cargo.toml's (wasm/build.sh keeps this line and package.json
// equal to it), the same as Python's kiln.__version__ and the kiln.version an export writes.
export const version = '0.1.0';
