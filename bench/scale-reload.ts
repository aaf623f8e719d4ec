/**
 * `node --import tsx bench/scale-reload.ts SOURCE SAVED`: read every tensor of a saved checkpoint
 * back, one at a time, and compare its stored bytes with the source's (the bench's reload step,
 * run as a child so its peak RSS is its own). Prints one JSON object; exit 1 on any difference.
 */
import { openCheckpoint } from '../src/io/load-model.ts';
import { readStored, type TensorRef } from '../src/io/stored-tensor.ts';

const [source, saved] = process.argv.slice(2);
const a = openCheckpoint(source).tensors;
const b = openCheckpoint(saved).tensors;
let bytes = 0;
const differ: string[] = [];
for (const [name, ref] of b) {
  const other = a.get(name) as TensorRef | undefined;
  const got = Buffer.from(readStored(ref).bytes);
  bytes += got.byteLength;
  if (!other || other.dtype !== ref.dtype || !got.equals(Buffer.from(readStored(other).bytes))) differ.push(name);
}
if (b.size !== a.size) differ.push(`(${a.size} tensors in the source, ${b.size} saved)`);
process.stdout.write(JSON.stringify({ tensors: b.size, bytes, identical: differ.length === 0, differ: differ.slice(0, 5) }) + '\n');
if (differ.length > 0) {
  process.stderr.write(`reload: ${differ.length} tensor(s) differ from the source, e.g. ${differ[0]}\n`);
  process.exitCode = 1;
}
