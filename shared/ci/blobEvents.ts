import { z } from 'zod';
import { sameAccountHost, type ContainerAddress } from './modelJson';

/**
 * An Event Grid event from the export storage account, in the Event Grid schema (`eventType`) or
 * as a CloudEvent (`type`). Only what the connector reads is checked.
 */
export const blobEventSchema = z.looseObject({
  eventType: z.string().optional(),
  type: z.string().optional(),
  subject: z.string(),
  data: z
    .looseObject({
      api: z.string().optional(),
      url: z.string().optional(),
    })
    .optional(),
});

const BLOB_CREATED = 'Microsoft.Storage.BlobCreated';
const SUBJECT = /^\/blobServices\/default\/containers\/([^/]+)\/blobs\/(.+)$/;

export type BlobEventTarget = { kind: 'blob'; blobName: string } | { kind: 'ignored'; reason: string };

/**
 * The blob an event announces, if it is one the connector should look at: created, in the export
 * container, on the export account. The blob itself is never downloaded here; the sync streams
 * the partitions it needs.
 */
export function blobOfEvent(event: unknown, exportContainer: ContainerAddress): BlobEventTarget {
  const parsed = blobEventSchema.safeParse(event);
  if (!parsed.success)
    return { kind: 'ignored', reason: `not a blob event (${parsed.error.issues[0]?.path.join('.') || 'event'}: ${parsed.error.issues[0]?.message})` };
  const { subject, data } = parsed.data;
  const type = parsed.data.eventType ?? parsed.data.type;
  if (type !== BLOB_CREATED) return { kind: 'ignored', reason: `event type ${type ?? '(none)'}` };
  // A Data Lake file is announced empty by CreateFile, and again complete by FlushWithClose.
  if (data?.api === 'CreateFile') return { kind: 'ignored', reason: 'CreateFile (the file is announced again once written)' };
  const match = SUBJECT.exec(subject);
  if (!match) return { kind: 'ignored', reason: 'subject is not a blob' };
  if (match[1] !== exportContainer.containerName) return { kind: 'ignored', reason: `container ${match[1]} is not the export container` };
  if (data?.url) {
    let host: string;
    try {
      host = new URL(data.url).host;
    } catch {
      return { kind: 'ignored', reason: 'data.url is not a URL' };
    }
    if (!sameAccountHost(host, new URL(exportContainer.url).host)) return { kind: 'ignored', reason: `blob on another storage account (${host})` };
  }
  return { kind: 'blob', blobName: match[2] };
}
