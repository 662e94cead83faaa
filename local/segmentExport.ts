import { crc32, deflateRawSync, gzipSync } from 'node:zlib';

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** Braze's export writes users in files of at most this many lines. */
export const USERS_PER_FILE = 5_000;

/** Fields a segment export may ask for that sit at the top of a user's line; every other attribute is a custom one. */
const STANDARD_FIELDS = new Set(['email', 'first_name', 'last_name', 'phone', 'gender', 'country', 'language', 'home_city', 'dob']);

/**
 * One user as `/users/export/segment` writes it: the identifiers and standard fields asked for at
 * the top, custom attributes under `custom_attributes`. `key` is the local server's profile key
 * (`external_id:…`, `email:…`, `alias:label:name`).
 */
export function exportLine(key: string, profile: Record<string, Json>, fields: ReadonlySet<string>): string {
  const user: Record<string, Json> = {};
  if (key.startsWith('external_id:') && fields.has('external_id')) user.external_id = key.slice('external_id:'.length);
  if (key.startsWith('alias:') && fields.has('user_aliases')) {
    const [, label, ...name] = key.split(':');
    user.user_aliases = [{ alias_label: label, alias_name: name.join(':') }];
  }
  for (const [name, value] of Object.entries(profile)) if (STANDARD_FIELDS.has(name) && fields.has(name)) user[name] = value;
  if (key.startsWith('email:') && fields.has('email')) user.email ??= key.slice('email:'.length);
  if (fields.has('custom_attributes')) {
    const custom: Record<string, Json> = {};
    for (const [name, value] of Object.entries(profile)) if (!STANDARD_FIELDS.has(name)) custom[name] = value;
    user.custom_attributes = custom;
  }
  return JSON.stringify(user);
}

/** NDJSON files of at most USERS_PER_FILE users each, named as Braze names them under the export's prefix. */
export function exportFiles(prefix: string, lines: string[]): { name: string; text: string }[] {
  const files: { name: string; text: string }[] = [];
  for (let i = 0; i < lines.length || files.length === 0; i += USERS_PER_FILE) {
    files.push({
      name: `${prefix}/${files.length}.txt`,
      text: lines
        .slice(i, i + USERS_PER_FILE)
        .map((l) => `${l}\n`)
        .join(''),
    });
  }
  return files;
}

/** The files as one gzip stream of concatenated members, one per file (what a reader sees as one NDJSON stream). */
export function gzipFiles(files: { text: string }[]): Buffer {
  return Buffer.concat(files.map((f) => gzipSync(f.text)));
}

/** The files in a zip archive, each entry deflated as Braze's are. */
export function zipFiles(files: { name: string; text: string }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const file of files) {
    const name = Buffer.from(file.name, 'utf8');
    const raw = Buffer.from(file.text, 'utf8');
    const crc = crc32(raw);
    const data = deflateRawSync(raw);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflated
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(raw.length, 22);
    local.writeUInt16LE(name.length, 26);
    locals.push(local, name, data);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(raw.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}
