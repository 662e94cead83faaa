import { tmpdir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { DestinationConfig } from '../config/syncConfig';
import { BrazeAuthError, BrazeRetryableError, BrazeUnreachableError, InvalidInputError } from '../errors';
import { exportRequestBlobName, viewBlobName } from '../runs/runBlobs';
import type { RunRecord } from '../runs/runRecord';
import type { UnitTotals } from '../runs/unitLedger';
import { shardOfHash } from '../state/deliveredState';
import { keyHash } from '../state/profileIndex';
import { isConflict, isNotFound } from '../storage/storageErrors';
import { StagedBlobWriter } from '../storage/stagedBlobWriter';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { readSources, runDestination } from '../runs/runSources';
import { emptyTotals, shardBlockBytes } from '../reader/mapPartition';
import { canonicalKey, normalizesGuids } from '../mapping/customerId';
import { comparableHashes, exportedUserKeys, exportedUserSchema, exportedValue, exportFieldsFor, viewLineText } from './brazeView';
import { mappedFieldNames } from '../mapping/fieldHashes';
import { ARCHIVE_LIMITS, archiveLines, downloadArchive, probeArchive, removeArchive, type ArchiveLimits } from './exportArchive';

/**
 * A reconcile's export step, one per segment: ask Braze to export the segment (once — the answer
 * is kept beside the run, so a retried or duplicated message waits for the same export), look for
 * the archive every poll interval without holding an instance, and once it is there, read it into
 * per-shard view blobs the diff steps compare with the refresh.
 */

const ticketSchema = z.strictObject({
  objectPrefix: z.string().min(1),
  url: z.string().optional(),
  requestedAt: z.string(),
});
type ExportTicket = z.output<typeof ticketSchema>;

export type ExportReadiness = { kind: 'ready'; url: string } | { kind: 'wait'; delayMs: number; reason: string };

/**
 * Whether segment `g`'s export can be read now: asks for it the first time, then looks for the
 * archive. A failure that waiting cannot mend (bad key, unknown segment, no archive in time)
 * throws an InvalidInputError: the reconcile fails with it.
 */
export async function awaitSegmentExport(deps: ConnectorDeps, run: RunRecord, g: number): Promise<ExportReadiness> {
  const segment = (await readSources(deps, run))[g];
  const what = exportName(segment);
  const destination = runDestination(deps, run);
  let ticket: ExportTicket;
  try {
    ticket = await exportTicket(deps, run, g, segment.brazeSegmentId, destination);
  } catch (error) {
    // Waiting cannot mend a bad key or a wrong endpoint: the reconcile fails saying which (the next one asks again).
    if (error instanceof BrazeAuthError || error instanceof BrazeUnreachableError) throw new InvalidInputError(error.message);
    if (error instanceof BrazeRetryableError) {
      const delayMs = Math.max(deps.settings.reconcile.pollMs, (error.retryAtMs ?? 0) - deps.clock.now());
      return { kind: 'wait', delayMs, reason: error.message };
    }
    throw error;
  }
  if (!ticket.url) {
    throw new InvalidInputError(
      `${what} went to the workspace's own cloud storage (Braze answered no download URL); a reconcile reads the download URL, so clear "Make this the default data export destination" for the workspace`,
    );
  }
  const state = await probeArchive(ticket.url).catch((error: unknown) => {
    if (error instanceof BrazeRetryableError) return 'notReady' as const;
    // A download URL the connector will not fetch (plain http elsewhere than this host) never becomes one it will.
    if (error instanceof InvalidInputError) throw new InvalidInputError(`${what}: ${error.message}`);
    throw error;
  });
  if (state === 'ready') return { kind: 'ready', url: ticket.url };
  const waitedMs = deps.clock.now() - Date.parse(ticket.requestedAt);
  if (waitedMs > deps.settings.reconcile.exportTimeoutMs) {
    throw new InvalidInputError(
      `${what} was not ready ${Math.round(waitedMs / 60_000)} minutes after it was asked for (RECONCILE_EXPORT_TIMEOUT_MINUTES); start the reconcile again later`,
    );
  }
  return { kind: 'wait', delayMs: deps.settings.reconcile.pollMs, reason: `${what} is not ready yet` };
}

/** How a message names a segment's export: by the Braze segment and the CI table it mirrors. */
function exportName(segment: { brazeSegmentId: string; table: string }): string {
  return `Braze's export of segment "${segment.brazeSegmentId}" (${segment.table})`;
}

/** The export asked for this run and segment, asking Braze for it if nobody has yet. */
async function exportTicket(deps: ConnectorDeps, run: RunRecord, g: number, segmentId: string, destination: DestinationConfig): Promise<ExportTicket> {
  const blob = deps.storage.stateContainer.getBlockBlobClient(exportRequestBlobName(run.runId, g));
  const existing = await readTicket(blob);
  if (existing) return existing;
  const answer = await deps.brazeFor(destination.workspace).exportSegment(segmentId, exportFieldsFor(destination));
  const ticket: ExportTicket = { objectPrefix: answer.objectPrefix, url: answer.url, requestedAt: new Date(deps.clock.now()).toISOString() };
  const text = JSON.stringify(ticket);
  try {
    await blob.upload(text, Buffer.byteLength(text), { conditions: { ifNoneMatch: '*' } });
  } catch (error) {
    // Another copy of the message asked too and wrote first: wait for its export.
    if (isConflict(error)) return (await readTicket(blob))!;
    throw error;
  }
  deps.log.info(`run ${run.runId}: asked Braze to export segment ${g} (object prefix ${answer.objectPrefix})`);
  return ticket;
}

async function readTicket(blob: ReturnType<ConnectorDeps['storage']['stateContainer']['getBlockBlobClient']>): Promise<ExportTicket | undefined> {
  try {
    return ticketSchema.parse(JSON.parse((await blob.downloadToBuffer()).toString('utf8')));
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

/**
 * Reads segment `g`'s archive into the shards: each user Braze lists becomes a view line (its key
 * by the destination's matching rules, the segment, its mapped fields' hashes) in the blob of the
 * shard its key hashes to. A user no matching rule can key is counted, not guessed at. An archive
 * that is not a readable export within `limits` fails the reconcile: reading it again would too.
 */
export async function readSegmentExport(
  deps: ConnectorDeps,
  run: RunRecord,
  g: number,
  url: string,
  owner: string,
  signal: AbortSignal,
  limits: ArchiveLimits = ARCHIVE_LIMITS,
): Promise<UnitTotals> {
  const sources = await readSources(deps, run);
  const what = exportName(sources[g]);
  const destination = runDestination(deps, run);
  // A user Braze has under another spelling of its GUID is found by the canonical one's hash (and renamed).
  const normalizeGuids = normalizesGuids(destination, sources);
  const fieldNames = mappedFieldNames(destination);
  const state = deps.storage.stateContainer;
  const shards = run.shards;
  const blockBytes = shardBlockBytes(shards);
  const outputs = Array.from({ length: shards }, (_, s) => new StagedBlobWriter(state.getBlockBlobClient(viewBlobName(run.runId, g, owner, s)), blockBytes));
  const file = path.join(tmpdir(), `braze-export-${run.runId}-g${g}-${owner}`);
  const totals: UnitTotals = { ...emptyTotals(), usersExported: 0, usersUnmatched: 0 };
  try {
    if ((await downloadArchive(url, file, limits, signal)) === 'notReady')
      throw new BrazeRetryableError('the segment export disappeared before it was read', 404);
    let n = 0;
    for await (const line of archiveLines(file, limits)) {
      if (++n % 1024 === 0) signal.throwIfAborted();
      let json: unknown;
      try {
        json = JSON.parse(line.text);
      } catch {
        throw new InvalidInputError(`the archive's ${line.where} is not JSON`);
      }
      const parsed = exportedUserSchema.safeParse(json);
      if (!parsed.success) throw new InvalidInputError(`the archive's ${line.where} is not a user (${parsed.error.issues[0]?.message})`);
      totals.usersExported! += 1;
      const keys = exportedUserKeys(parsed.data, destination);
      if (keys.length === 0) {
        totals.usersUnmatched! += 1;
        continue;
      }
      // Every key the user could be known by in CI goes to its own shard: whichever one CI uses finds the user there.
      const v = comparableHashes(fieldNames, (name) => exportedValue(parsed.data, name));
      for (let i = 0; i < keys.length; i++) {
        const h = keyHash((normalizeGuids && canonicalKey(keys[i])) || keys[i]);
        const output = outputs[shardOfHash(h, shards)];
        output.write(viewLineText({ h, k: keys[i], g, v, alt: i === 0 ? 0 : 1, keys: keys.length }));
        if (output.full) await output.flushIfFull();
      }
    }
    signal.throwIfAborted();
    await Promise.all(outputs.map((output) => output.close()));
  } catch (error) {
    if (error instanceof InvalidInputError) throw new InvalidInputError(`${what}: ${error.message}`);
    throw error;
  } finally {
    await removeArchive(file);
  }
  return totals;
}
