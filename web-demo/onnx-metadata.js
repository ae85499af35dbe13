// Reads the few top-level facts of an ONNX file that the page shows beside what kiln-wasm's model
// object exposes: the producer and the opsets, and metadata_props (kiln.labels, kiln.input_scale...)
// for a build of kiln-wasm without `model.metadata`.
// An ONNX file is a protobuf ModelProto; we walk its top-level fields and skip the graph unread, so
// this stays a few dozen lines and costs nothing even for a large model. Field numbers are from
// onnx/onnx.proto: ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8,
// metadata_props 14; StringStringEntryProto key 1 / value 2; OperatorSetIdProto domain 1 / version 2.

class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes; this.pos = start; this.end = end;
  }
  varint() {
    let result = 0, shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const b = this.bytes[this.pos++];
      // Multiply rather than shift: JS bit operators are 32-bit and varints go to 64.
      result += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return result;
      shift += 7;
      if (shift > 63) throw new Error("varint too long");
    }
  }
  // Yields [fieldNumber, wireType, value]; value is a number (varint) or a Reader over the bytes.
  *fields() {
    while (this.pos < this.end) {
      const key = this.varint();
      const field = Math.floor(key / 8), wire = key % 8;
      if (field === 0) throw new Error("field number 0");
      if (wire === 0) yield [field, wire, this.varint()];
      else if (wire === 2) {
        const len = this.varint();
        if (this.pos + len > this.end) throw new Error("length-delimited field runs past the end");
        yield [field, wire, new Reader(this.bytes, this.pos, this.pos + len)];
        this.pos += len;
      } else if (wire === 1 || wire === 5) {
        this.pos += wire === 1 ? 8 : 4;
        if (this.pos > this.end) throw new Error("fixed-width field runs past the end");
      } else throw new Error(`unsupported wire type ${wire}`);
    }
  }
  string() {
    return new TextDecoder().decode(this.bytes.subarray(this.pos, this.end));
  }
}

/**
 * Top-level facts of an ONNX model: { irVersion, producer, opsets: [{domain, version}], metadata: {} }.
 * Throws an Error when the bytes are not a protobuf message (kiln-wasm gives the better message for
 * a broken file, so the page asks it first and uses this only for extras).
 */
export function readOnnxInfo(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const info = { irVersion: null, producer: "", opsets: [], metadata: {} };
  let producerVersion = "";
  for (const [field, wire, value] of new Reader(bytes).fields()) {
    if (field === 1 && wire === 0) info.irVersion = value;
    else if (field === 2 && wire === 2) info.producer = value.string();
    else if (field === 3 && wire === 2) producerVersion = value.string();
    else if (field === 8 && wire === 2) {
      const opset = { domain: "", version: null };
      for (const [f, w, v] of value.fields()) {
        if (f === 1 && w === 2) opset.domain = v.string();
        else if (f === 2 && w === 0) opset.version = v;
      }
      info.opsets.push(opset);
    } else if (field === 14 && wire === 2) {
      let key = "", val = "";
      for (const [f, w, v] of value.fields()) {
        if (f === 1 && w === 2) key = v.string();
        else if (f === 2 && w === 2) val = v.string();
      }
      info.metadata[key] = val;
    }
  }
  if (producerVersion) info.producer = `${info.producer} ${producerVersion}`.trim();
  return info;
}

/** Labels from kiln.labels metadata (a JSON list of strings), or null when absent or malformed. */
export function labelsFromMetadata(metadata) {
  const text = metadata?.["kiln.labels"];
  if (!text) return null;
  try {
    const labels = JSON.parse(text);
    return Array.isArray(labels) ? labels.map(String) : null;
  } catch {
    return null;
  }
}
