/**
 * A document corpus for calibration: a JSON array or JSON Lines of records whose `field` (C4's
 * `text` by default) holds one document. Every record is checked at read; an error names the file
 * and the row.
 */
import { DataError } from '../util/errors.ts';
import { readJsonRecords } from './json-records.ts';

export interface Document {
  text: string;
  /** Where the record is (`row 3`, `line 7 (row 3)`), for messages. */
  where: string;
}

/** A JSON or JSON Lines file (by its extension), the only kind of corpus that has documents. */
export function isJsonCorpus(file: string): boolean {
  return /\.jsonl?$/i.test(file);
}

export function readDocuments(file: string, field: string): Document[] {
  const docs = readJsonRecords(file, 'calibration corpus').map(({ value, where }) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new DataError(`${where}: expected an object with a '${field}' field, got ${JSON.stringify(value)?.slice(0, 60)}`, file);
    }
    const text = (value as Record<string, unknown>)[field];
    if (text === undefined) throw new DataError(`${where}: missing field '${field}' (every document needs it; the calibration field option names another)`, file);
    if (typeof text !== 'string') throw new DataError(`${where}: field '${field}' must be a string, got ${JSON.stringify(text)?.slice(0, 60)}`, file);
    return { text, where };
  });
  if (docs.length === 0) throw new DataError('no documents in the calibration corpus', file);
  return docs;
}
