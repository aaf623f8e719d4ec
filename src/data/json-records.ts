/**
 * Records of a JSON corpus: a JSON array of objects, or JSON Lines (one object per non-empty line).
 * Each record comes with where it is (`row N`, or `line L (row N)`), so a caller's error about a
 * record names the file and the row. Shared by instruction data and document calibration.
 */
import fs from 'node:fs';
import { DataError } from '../util/errors.ts';

export interface JsonRecord {
  value: unknown;
  /** `row 3` (JSON array) or `line 7 (row 3)` (JSON Lines): for messages. */
  where: string;
}

/** Every record of `file`; `what` names the data in messages (`instruction data`, `calibration corpus`). */
export function readJsonRecords(file: string, what: string): JsonRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(code === 'ENOENT' ? `${what} file not found` : `cannot read ${what} (${code ?? String(e)})`, file);
  }
  const out: JsonRecord[] = [];
  if (text.trimStart().startsWith('[')) {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new DataError(`not valid JSON (${(e as Error).message}); give a JSON array of records or JSON Lines`, file);
    }
    (data as unknown[]).forEach((value, i) => out.push({ value, where: `row ${i + 1}` }));
  } else {
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (e) {
        throw new DataError(`line ${i + 1} (row ${out.length + 1}): not valid JSON (${(e as Error).message}); give a JSON array of records or JSON Lines`, file);
      }
      out.push({ value, where: `line ${i + 1} (row ${out.length + 1})` });
    });
  }
  return out;
}
