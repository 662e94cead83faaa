import type { JsonValue } from '../ci/dataTypes';
import { dataPointsOf, describeIdentifier, identifierFromKey, type BrazeIdentifier } from '../mapping/profileIdentity';
import { canonicalKey } from '../mapping/customerId';
import { atLine } from '../ci/partitionReader';
import { erasureListedRows, gatherShard, rejectedRow, shardContext, shardWriters, sourceOf } from '../reader/diffShard';
import { mapLineFingerprint, parseMapLine } from '../reader/mapLines';
import { emptyTotals } from '../reader/mapPartition';
import { fieldHashes } from '../mapping/fieldHashes';
import { rejectCsvLine } from '../runs/rejectsReport';
import { viewBlobName } from '../runs/runBlobs';
import type { RunRecord } from '../runs/runRecord';
import type { UnitTotals } from '../runs/unitLedger';
import { profileStateOf, readPreviousShard, shardStateBlobName, type PreviousState, type StateRecord } from '../state/deliveredState';
import { isNotFound } from '../storage/storageErrors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { comparableHashes, parseViewLine, staleFields } from './brazeView';
import { BRAZE_SUBSCRIPTION_FIELDS } from '../brazeApi';
import { consentToSend } from '../mapping/subscriptions';
import { InvalidInputError } from '../errors';
import { FLAGS, formFromKey, formKey, sameForm } from '../state/membershipEncoding';
import { DRIFT_SAMPLE_SIZE, emptyDrift, type DriftTally } from '../runs/driftTally';

/** A profile as Braze's segment exports show it under one key: the segments it is in, its fields' hashes, and whether the key is the user's first. */
interface BrazeSide {
  k: string;
  mask: number;
  v: string;
  alt: boolean;
  keys: number;
}

const LEFT_TO_ERASURE = "the destination's erasure table lists this user: a reconcile leaves it to the next sync, which deletes it";

/**
 * A reconcile's diff step for one shard: the refresh's profiles (as a sync gathers them) against
 * what Braze's segment exports say, instead of against the delivered state. A CI member Braze's
 * segment lacks gets its membership (and, if Braze shows it in no segment at all, its fields);
 * a member whose mapped value Braze holds differently gets that value again; a profile in Braze's
 * segment that Customer Insights does not list is cleared (the destination's leaver value). What
 * matches is not sent. The next state is the refresh's, as after a sync, with what the shard sent
 * so the finalizer can restore what Braze did not take; a dry run only counts.
 */
export async function reconcileShard(
  deps: ConnectorDeps,
  run: RunRecord,
  shard: number,
  owner: string,
  mapOwners: Map<number, string>,
  exportOwners: Map<number, string>,
  /** Some rows of the refresh are keyed by e-mail or alias: a Braze user's first key is then not the only one CI may use. */
  fallbackKeyed: boolean,
  previous: PreviousState,
  signal: AbortSignal,
): Promise<UnitTotals> {
  const { segments, partitions, state, bits, names, mapperOf, keyOf, fieldNames, paidFieldCount, normalizeGuids, encoding } = await shardContext(deps, run);
  // Braze's segments are judged in the form the state says Braze holds; a form the config changed
  // since is written anew by a sync (which clears the old one) before anything can be compared.
  const stateForm = previous.format === 2 ? formFromKey(previous.manifest.membership) : FLAGS;
  if (previous.format !== 0 && !sameForm(stateForm, encoding.form))
    throw new InvalidInputError(
      `destination ${run.destination}: Braze holds its memberships as ${formKey(stateForm)} and the config asks for ${formKey(encoding.form)}; a sync writes them anew first — reconcile after it`,
    );
  const dry = run.dryRun;
  const totals: UnitTotals = { ...emptyTotals() };
  const drift = emptyDrift();
  const segmentDrift = (name: string) => (drift.segments[name] ??= { missing: 0, stray: 0, unresolved: 0 });

  // Every profile is mapped (its values are compared with Braze's): every line is kept.
  const { profiles, rejectLines } = await gatherShard(deps, run, shard, mapOwners, segments, keyOf, totals, undefined, () => true, signal);
  // Users the erasure table lists are the next sync's to delete: a reconcile neither repairs nor
  // clears them (it would bring a deleted one back), leaves them out of the state, and says so.
  const erased = new Set<string>();
  for (const line of await erasureListedRows(deps, run, shard, mapOwners, segments, bits, profiles, signal)) {
    rejectLines.push(rejectedRow(totals, partitions[line.p].partition.blobName, line, '(erased)', LEFT_TO_ERASURE));
    erased.add(line.h);
  }
  for (const hash of erased) profiles.delete(hash);

  // Braze's side of the shard: every segment's export, merged per profile.
  const braze = new Map<string, BrazeSide>();
  for (const [g, exportOwner] of exportOwners) {
    const blobName = viewBlobName(run.runId, g, exportOwner, shard);
    let text: string;
    try {
      text = (await state.getBlobClient(blobName).downloadToBuffer()).toString('utf8');
    } catch (error) {
      if (isNotFound(error)) throw new Error(`run ${run.runId}: Braze's view ${blobName} is missing`);
      throw error;
    }
    signal.throwIfAborted();
    const bit = bits.bit(segments[g].attribute);
    for (const lineText of text.split('\n')) {
      if (!lineText) continue;
      const line = parseViewLine(lineText, blobName);
      const known = braze.get(line.h);
      if (known) {
        known.mask = (known.mask | bit) >>> 0;
        known.alt &&= line.alt === 1;
        known.keys = Math.max(known.keys, line.keys);
      } else braze.set(line.h, { k: line.k, mask: bit, v: line.v, alt: line.alt === 1, keys: line.keys });
    }
  }

  const before = new Map<string, StateRecord>();
  for await (const record of readPreviousShard(state, previous, shard, run.shards)) before.set(record.h, record);
  signal.throwIfAborted();

  const writers = shardWriters(deps, run, shard, owner, totals);
  const { sentWriter, rejects, packer, keep, touch } = writers;
  const note = (identifier: BrazeIdentifier, kind: DriftTally['sample'][number]['drift'], attributes: string[]) => {
    if (drift.sample.length < DRIFT_SAMPLE_SIZE) drift.sample.push({ identifier: describeIdentifier(identifier), drift: kind, attributes });
  };
  const repair = async (
    hash: string,
    key: string,
    identifier: BrazeIdentifier,
    attributes: Record<string, JsonValue>,
    rows: number,
    source: 'leaver' | { partition: number; row: number },
    rename?: { from: string },
  ) => {
    drift.profiles += 1;
    drift.dataPoints += dataPointsOf(attributes);
    const prior = before.get(hash);
    await sentWriter?.writeSent({ h: hash, k: key, p: prior ? profileStateOf(prior) : null });
    await packer.add({ hash, identifier, attributes, rows, source, ...(rename ? { rename } : {}) });
    await touch(hash, 'repairs', Object.keys(attributes));
    totals.usersEnqueued += 1;
  };

  try {
    for (const line of rejectLines) await rejects.writeLine(rejectCsvLine(line).slice(0, -1));
    let seen = 0;
    for (const [hash, profile] of profiles) {
      if (++seen % 1024 === 0) signal.throwIfAborted();
      const synced = (profile.bits & bits.syncedMask) >>> 0;
      const prior = before.get(hash);
      const carried = prior ? (bits.maskOf(prior.m) & ~bits.syncedMask) >>> 0 : 0;
      totals.dataPointsFullSend += paidFieldCount + encoding.fullSendPoints(synced);
      // Every profile is mapped: its values are compared with Braze's, not with a fingerprint.
      const line = profile.first!;
      const first = parseMapLine(line, `shard ${shard}`);
      const mapped = mapperOf(first.g)(first.v);
      if (!mapped.ok) throw new Error(`run ${run.runId}: a row that had an identifier when mapped lost it (${mapped.reason})`);
      const { key, identifier, fields } = mapped.profile;
      // Subscription states go as a sync sends them: the ones CI changed since Braze last took one from us.
      const consent = consentToSend(fields, prior?.c);
      const next: StateRecord = {
        h: hash,
        k: key,
        m: names((synced | carried) >>> 0),
        f: mapLineFingerprint(line, `shard ${shard}`),
        a: fieldHashes(fieldNames, fields),
        c: consent.next,
      };
      const side = braze.get(hash);
      const brazeMask = side ? (side.mask & bits.syncedMask) >>> 0 : 0;
      const missing = (synced & ~brazeMask) >>> 0;
      const stray = (brazeMask & ~synced) >>> 0;
      // In no exported segment, Braze's values are unknown: everything is sent, as to a new profile.
      // Subscription states are never repaired: users unsubscribe in Braze (a footer link, the SDK),
      // and CI's value, sent again, would undo that; a sync sends them when CI's value changes.
      const stale = (
        side
          ? staleFields(
              fieldNames,
              comparableHashes(fieldNames, (name) => fields[name]),
              side.v,
            )
          : Object.keys(fields)
      ).filter((name) => !BRAZE_SUBSCRIPTION_FIELDS.has(name));
      // Braze has the user under another spelling of its GUID: renamed to the canonical one.
      const rename = normalizeGuids && side && side.k !== key && canonicalKey(side.k) === key ? { from: side.k.slice(2) } : undefined;
      if (missing === 0 && stray === 0 && stale.length === 0 && !rename && consent.sent.length === 0) {
        totals.rowsSkippedUnchanged += profile.rows;
        await keep(next);
        continue;
      }
      const attributes: Record<string, JsonValue> = {};
      for (const name of stale) attributes[name] = fields[name];
      for (const name of consent.sent) attributes[name] = consent.fields[name];
      Object.assign(attributes, encoding.change(missing, stray, (synced | carried) >>> 0));
      for (const name of names(missing)) segmentDrift(name).missing += 1;
      for (const name of names(stray)) segmentDrift(name).stray += 1;
      if (side) for (const name of stale) drift.staleValues[name] = (drift.staleValues[name] ?? 0) + 1;
      note(identifier, missing ? 'missing' : stray ? 'stray' : 'stale', [...names(missing), ...names(stray), ...(side ? stale : [])]);
      for (const issue of mapped.profile.fieldIssues) {
        const source = partitions[first.p].partition.blobName;
        await rejects.writeLine(
          rejectCsvLine({
            outcome: 'field_dropped',
            source,
            row: first.r,
            identifier: describeIdentifier(identifier),
            reason: issue + atLine(first.l ?? 0),
          }).slice(0, -1),
        );
      }
      await keep(next);
      await repair(hash, key, identifier, attributes, profile.rows, sourceOf(first), rename);
      totals.rowsEnqueued += profile.rows;
    }
    // In Braze's segment, not a member in Customer Insights: cleared. A user is judged by its first
    // key; if CI keys some rows by e-mail or alias, a user with other keys may be a CI member under
    // one of them (in another shard): it is reported, never cleared on a guess.
    for (const [hash, side] of braze) {
      if (profiles.has(hash) || side.alt || erased.has(hash)) continue;
      const stray = (side.mask & bits.syncedMask) >>> 0;
      if (stray === 0) continue;
      if (fallbackKeyed && side.keys > 1) {
        for (const name of names(stray)) segmentDrift(name).unresolved += 1;
        continue;
      }
      // What the user stays a member of: none of this run's segments, and of the others what the state holds.
      const prior = before.get(hash);
      const attributes = encoding.change(0, stray, prior ? (bits.maskOf(prior.m) & ~bits.syncedMask) >>> 0 : 0);
      for (const name of names(stray)) segmentDrift(name).stray += 1;
      const identifier = identifierFromKey(side.k);
      note(identifier, 'stray', names(stray));
      await repair(hash, side.k, identifier, attributes, 0, 'leaver');
      totals.exitsEnqueued += 1;
    }
    // Not in the refresh: only memberships of segments this run does not cover are kept.
    for (const [hash, prior] of before) {
      if (profiles.has(hash) || erased.has(hash)) continue;
      await keep({ h: hash, k: prior.k, m: names((bits.maskOf(prior.m) & ~bits.syncedMask) >>> 0), f: prior.f, a: prior.a, c: prior.c });
    }
    await writers.close(signal);
  } catch (error) {
    await writers.abort(error);
    throw error;
  }
  totals.batchesEnqueued = packer.messages;
  drift.requests = packer.requests;
  totals.drift = drift;
  if (!dry) totals.stateBlob = shardStateBlobName(run.modelJsonPath, run.runId, shard, owner);
  totals.guidKeys = normalizeGuids || undefined;
  totals.membershipForm = formKey(encoding.form);
  return totals;
}
