import type { JsonValue } from '../ci/dataTypes';
import { ERASURE_ATTRIBUTE, type SegmentRefresh } from '../ci/exportRefresh';
import { dataPointsOf, describeIdentifier, identifierFromKey, type BrazeIdentifier } from '../mapping/profileIdentity';
import { BRAZE_SUBSCRIPTION_FIELDS } from '../brazeApi';
import { consentToSend } from '../mapping/subscriptions';
import { changedAttributes, fieldHashes } from '../mapping/fieldHashes';
import { emptyPreview, PREVIEW_SAMPLE_SIZE } from '../runs/previewTally';
import { createKeyMapper, createRowMapper, type RowMapper } from '../mapping/rowMapper';
import { canonicalKey, normalizesGuids } from '../mapping/customerId';
import { BatchPacker } from '../queue/batchPacker';
import { rejectCsvLine, type RejectLine } from '../runs/rejectsReport';
import { atLine } from '../ci/partitionReader';
import { mapOutputBlobName, sentBlobName, shardRejectsPartName, stagedBatchesName, touchedShardBlobName } from '../runs/runBlobs';
import type { RunRecord } from '../runs/runRecord';
import type { UnitTotals } from '../runs/unitLedger';
import { diffProfile } from '../state/diff';
import { FLAGS, formFromKey, formKey, membershipEncoding, sameForm } from '../state/membershipEncoding';
import {
  NdjsonWriter,
  profileStateOf,
  readPreviousShardRekeyed,
  readUncertainShard,
  shardStateBlobName,
  UNCERTAIN_FINGERPRINT,
  type PreviousState,
  type StateRecord,
  type UncertainRun,
} from '../state/deliveredState';
import { runMembershipBits, type MembershipBits } from '../state/membershipBits';
import { readPreviousShardLines, StateBuffers, StateLine } from '../state/stateLines';
import { keyHash } from '../state/profileIndex';
import { BlobLineWriter } from '../storage/blobLineWriter';
import { isNotFound } from '../storage/storageErrors';
import type { ConnectorDeps } from '../runs/connectorDeps';
import { partitionList, readSources, runDestination, segmentBytes } from '../runs/runSources';
import {
  canonicalPartitionColumns,
  IDENTITY_HINT_PREFIX,
  isIdentityHintAt,
  mapLineFingerprint,
  mapLineHash,
  parseIdentityHint,
  parseMapLine,
  readMapLineHash,
  readMapLineHead,
  type MapLine,
} from './mapLines';
import { emptyTotals } from './mapPartition';
import { mappedFieldNames } from '../mapping/fieldHashes';

/**
 * One profile of the shard in this refresh: its memberships, input rows, where the row that decides
 * its fields is, and that row's map line — kept only if the profile may have to be mapped (its
 * fingerprint differs from the state's), and parsed only then.
 */
export interface ShardProfile {
  bits: number;
  claimed: number;
  rows: number;
  /** Undefined: the deciding row's fingerprint is the one the state holds for the profile. */
  first: string | undefined;
  /** Where the deciding row is: partition, data row, physical line (0 when not known). */
  p: number;
  r: number;
  l: number;
  /** The profile's record in the previous state, looked up once: none when the state does not hold it, or the step reads no state. */
  prior: StateRecord | undefined;
}

/** Whether a diff step keeps a profile's deciding map line: not when its fingerprint says its fields are what Braze has. */
export type KeepsLine = (prior: StateRecord | undefined, fingerprint: string) => boolean;

/** A profile keyed by e-mail in the state whose row is now keyed by this customer ID, in these segments. */
export interface IdentifiedEmail {
  externalId: string;
  bits: number;
  ambiguous: boolean;
}

const DUPLICATE = 'duplicate: the segment has another row of this profile (its values were sent)';
const ERASED = "the destination's erasure table lists this user: deleted from Braze, not sent";
const SHADOWED =
  'no customer ID, and a row with a customer ID carries this e-mail: Braze would apply this row to that profile (it updates the identified profile holding an address first)';

/**
 * A shard step: everything about the profiles whose key hashes to this shard. It gathers their
 * rows from every partition's map output (so a profile in several segments becomes one object,
 * its first row — largest segment first — deciding its fields), reads its slice of the delivered
 * state, and enqueues what changed: joiners and changed profiles in full, membership changes
 * alone, leavers cleared. A row whose raw values have the fingerprint the state holds is not
 * mapped at all. It writes the shard's next state as the run goes (as if Braze takes everything)
 * and, for what it sent, the state before, so the finalizer can restore what Braze did not take.
 */
export async function diffShard(...step: DiffShardStep): Promise<UnitTotals> {
  const buffers = new StateBuffers();
  try {
    return await diffShardReading(buffers, ...step);
  } finally {
    buffers.release();
  }
}

type DiffShardStep = Parameters<typeof diffShardReading> extends [StateBuffers, ...infer Step] ? Step : never;

/** diffShard, its previous state read into `buffers` (its records are valid until they are released). */
async function diffShardReading(
  buffers: StateBuffers,
  deps: ConnectorDeps,
  run: RunRecord,
  shard: number,
  owner: string,
  mapOwners: Map<number, string>,
  previous: PreviousState,
  /** A superseded run that may have delivered part of its snapshot. */
  uncertain: UncertainRun | undefined,
  signal: AbortSignal,
): Promise<UnitTotals> {
  const { segments, partitions, state, bits, names, mapperOf, keyOf, fieldNames, paidFieldCount, normalizeGuids, encoding } = await shardContext(deps, run);
  // The state was written with memberships in another form (flags ↔ list, or another list
  // attribute): every profile it holds is written in this one, and what the other form left cleared.
  const previousForm = previous.format === 2 ? formFromKey(previous.manifest.membership) : FLAGS;
  const switching = previous.format !== 0 && !sameForm(previousForm, encoding.form);
  const mapsSubscriptions = fieldNames.some((name) => BRAZE_SUBSCRIPTION_FIELDS.has(name));
  // A dry run, and a guarded run (which may be held with its preview), account for what they would send.
  const dry = run.dryRun || run.staged;
  const preview = emptyPreview();
  const segmentPreview = (name: string) => (preview.segments[name] ??= { joiners: 0, leavers: 0, changed: 0, unchanged: 0 });
  const attributeChanged = (name: string) => (preview.attributes[name] = (preview.attributes[name] ?? 0) + 1);
  const totals: UnitTotals = { ...emptyTotals() };
  const fallback = previous.format === 1;

  // The state first: a profile whose deciding row has the fingerprint the state holds needs only
  // where that row is, not its line (most of a refresh; the lines of a shard are its largest part).
  const before = new Map<string, StateRecord>();
  // A state written before GUID customer IDs had one spelling is read whole, each record placed by
  // its canonical key (it keeps its key: the external_id Braze has, renamed below).
  const migrating = normalizeGuids && previous.format !== 0 && !(previous.format === 2 && previous.manifest.guidKeys);
  /** Other spellings of a GUID whose canonical key another record holds: two Braze users, cleared under their own external_id. */
  const strays: StateRecord[] = [];
  const place = (record: StateRecord) => {
    const held = before.get(record.h);
    if (held) {
      const [kept, stray] = canonicalKey(held.k) === undefined ? [held, record] : [record, held];
      before.set(record.h, kept);
      strays.push(stray);
      return;
    }
    before.set(record.h, record);
  };
  if (migrating) for await (const record of readPreviousShardRekeyed(state, previous, shard, run.shards, canonicalKey)) place(record);
  else await readPreviousShardLines(state, previous, shard, run.shards, buffers, place);
  if (migrating) deps.log.info(`run ${run.runId} shard ${shard}: GUID customer IDs now have one spelling; the state is read whole once to rename the others`);
  // What a superseded run may have delivered is not known: those profiles are sent in full. If what
  // it left is gone, which profiles it touched is not known either: every profile of the shard is.
  let sendAll = run.force;
  if (uncertain) {
    const found = await readUncertainShard(state, uncertain, shard, run.shards);
    for (const record of found.records) before.set(record.h, record);
    if (!found.complete) {
      sendAll = true;
      deps.log.warn(`run ${run.runId}: what run ${uncertain.runId} sent in shard ${shard} is gone; every profile of the shard is sent in full`);
    }
  }
  const keepsLine: KeepsLine = (prior, fingerprint) => fallback || sendAll || prior === undefined || prior.f !== fingerprint;
  const { profiles, rejectLines, hintLines } = await gatherShard(deps, run, shard, mapOwners, segments, keyOf, totals, before, keepsLine, signal);
  // Users the erasure table lists are deleted from Braze and written nowhere: their segment rows are
  // rejected, saying so (not named in the report either: the row's place says which it was), and the
  // erasure row is what the deletion accounts for.
  const erasures = new Map<string, MapLine>();
  for (const line of await erasureListedRows(deps, run, shard, mapOwners, segments, bits, profiles, signal)) {
    if (segments[line.g].erasure) erasures.set(line.h, line);
    else rejectLines.push(rejectedRow(totals, partitions[line.p].partition.blobName, line, '(erased)', ERASED));
  }
  // Identity hints that matter here: for a profile of this refresh keyed by e-mail, or a state's one.
  const hints = identityHints(
    hintLines,
    (hash) => profiles.has(hash) || before.get(hash)?.k.startsWith('e:') === true,
    segments.map((segment) => (segment.erasure ? 0 : bits.bit(segment.attribute))),
  );
  // A profile keyed by e-mail whose address a row with a customer ID also carries: sent by e-mail, it
  // would overwrite that profile in Braze. Its rows are rejected, and a profile of it that Braze
  // already has is merged into the customer ID's one as a leaver below. One to be erased is deleted
  // instead, whatever carries its address.
  const shadowed = new Set([...hints.keys()].filter((hash) => profiles.has(hash) && !erasures.has(hash)));
  if (shadowed.size) {
    for (const line of await rowsOf(deps, run, shard, mapOwners, shadowed, signal)) {
      rejectLines.push(rejectedRow(totals, partitions[line.p].partition.blobName, line, 'email (redacted)', SHADOWED));
    }
    for (const hash of shadowed) profiles.delete(hash);
  }
  signal.throwIfAborted();

  const writers = shardWriters(deps, run, shard, owner, totals);
  const { sentWriter, rejects, packer, keep, touch } = writers;
  // A record's memberships by how its line spells them (a shard's lines share a handful), and
  // whether the next state would spell them so: then a profile whose state stays as it was has its
  // line written back as it was read, never parsed.
  const membersByText = new Map<string, { mask: number; asWritten: boolean }>();
  const membersOf = (prior: StateRecord): { mask: number; asWritten: boolean } => {
    if (!(prior instanceof StateLine)) return { mask: bits.maskOf(prior.m), asWritten: false };
    const text = prior.membersText;
    let members = membersByText.get(text);
    if (!members) {
      const mask = bits.maskOf(prior.m);
      members = { mask, asWritten: mask !== 0 && JSON.stringify(names(mask)) === text };
      membersByText.set(text, members);
    }
    return members;
  };
  /** A profile whose next state is its previous one with these memberships. */
  const keepPrior = (hash: string, prior: StateRecord, mask: number) => {
    if (prior instanceof StateLine) {
      const members = membersOf(prior);
      if (members.asWritten && members.mask === mask) return writers.keepLine(prior);
    }
    return keep({ h: hash, k: prior.k, m: names(mask), f: prior.f, a: prior.a, c: prior.c });
  };
  /** A dry run's account of one profile that would be sent. */
  const tally = (
    identifier: BrazeIdentifier,
    joined: number,
    left: number,
    fieldsChanged: string[],
    membership: Record<string, unknown>,
    attributes: Record<string, unknown>,
    kind?: 'merges' | 'renames' | 'rewrites' | 'erases',
  ) => {
    preview.profilesSent += 1;
    preview.dataPoints += dataPointsOf(attributes);
    const written = Object.keys(membership);
    for (const name of written) attributeChanged(name);
    for (const name of fieldsChanged) attributeChanged(name);
    if (kind === 'rewrites') preview.rewritten += 1;
    if (preview.sample.length < PREVIEW_SAMPLE_SIZE)
      preview.sample.push({
        identifier: describeIdentifier(identifier),
        change: kind ?? (joined ? 'joins' : left && !fieldsChanged.length ? 'leaves' : 'changes'),
        attributes: [...written, ...fieldsChanged],
      });
  };
  /**
   * A profile sent only for its memberships: `leave` cleared, `after` what it stays a member of
   * (after a merge, with `identify`); in a switch of form, written anew with the old form cleared.
   */
  const enqueueExit = async (hash: string, identifier: BrazeIdentifier, leave: number, after: number, prior: number, identify?: { email: string }) => {
    // Merged into an identified profile (identify), a list needs no clearing: the merge brings only
    // fields that profile lacks, and the list its own record sends is whole; what another form left does.
    const attributes =
      identify && encoding.form.mode === 'list'
        ? switching
          ? encoding.clearing(previousForm, prior)
          : {}
        : switching
          ? { ...encoding.clearing(previousForm, prior), ...encoding.full(after) }
          : encoding.change(0, leave, after);
    if (dry) {
      for (const name of names((leave & bits.syncedMask) >>> 0)) segmentPreview(name).leavers += 1;
      tally(identifier, 0, leave, [], attributes, attributes, identify ? 'merges' : switching ? 'rewrites' : undefined);
    }
    await packer.add({ hash, identifier, attributes, rows: 0, source: 'leaver', ...(identify ? { identify } : {}) });
    await touch(hash, identify ? 'merges' : switching ? 'rewrites' : 'leaves', Object.keys(attributes));
    totals.usersEnqueued += 1;
    totals.exitsEnqueued += 1;
  };
  /**
   * A user of the erasure table: deleted from Braze, and left out of the next state. One this
   * destination deleted before and has not written since is not deleted again (the audit ledger
   * says when it was).
   */
  const enqueueErasure = async (hash: string, line: MapLine, prior: StateRecord | undefined) => {
    const key = keyOf(line.v);
    if (!key.ok) throw new Error(`run ${run.runId}: a row that had an identifier when mapped lost it (${key.reason})`);
    // Braze holds the user under the key the state has (another spelling of its GUID, before a rename).
    const identifier = identifierFromKey(prior?.k ?? key.key);
    if (!prior && (await deps.erasures.get(run.modelJsonPath, hash))) {
      totals.rowsSkippedUnchanged += 1;
      return;
    }
    if (dry) tally(identifier, 0, 0, [], {}, {}, 'erases');
    await sentWriter?.writeSent({ h: hash, k: prior?.k ?? key.key, p: prior ? profileStateOf(prior) : null });
    await packer.add({ hash, identifier, attributes: {}, rows: 1, source: sourceOf(line), erase: true });
    await touch(hash, 'erases');
    totals.rowsEnqueued += 1;
    totals.usersEnqueued += 1;
    totals.erasuresEnqueued += 1;
  };
  try {
    for (const line of rejectLines) await rejects.writeLine(rejectCsvLine(line).slice(0, -1));
    let seen = 0;
    for (const [hash, profile] of profiles) {
      if (++seen % 1024 === 0) signal.throwIfAborted();
      const prior = profile.prior;
      const erasure = erasures.get(hash);
      if (erasure) {
        await enqueueErasure(hash, erasure, prior);
        continue;
      }
      const priorMask = prior ? membersOf(prior).mask : 0;
      const synced = (profile.bits & bits.syncedMask) >>> 0;
      const carried = (priorMask & ~bits.syncedMask) >>> 0;
      const nextMask = (synced | carried) >>> 0;
      // What sending the profile in full would cost: every configured field, every membership.
      totals.dataPointsFullSend += paidFieldCount + encoding.fullSendPoints(synced);
      // No line kept: the state holds this fingerprint (keepsLine), so the fields are what Braze has.
      const fingerprintNow = profile.first === undefined ? prior!.f : mapLineFingerprint(profile.first, `shard ${shard}`);
      const fieldsChanged = fallback || !prior || prior.f !== fingerprintNow;
      const change = diffProfile(
        { hasPrevious: prior !== undefined, previousMemberships: priorMask, currentMemberships: profile.bits, fieldsChanged },
        bits.syncedMask,
        sendAll || prior?.f === UNCERTAIN_FINGERPRINT,
      );
      if (dry) {
        // Per segment: joins, leaves, or stays — changed when its fields change.
        const stayed = (synced & priorMask) >>> 0;
        for (const name of names((synced & ~priorMask) >>> 0)) segmentPreview(name).joiners += 1;
        for (const name of names((priorMask & bits.syncedMask & ~synced) >>> 0)) segmentPreview(name).leavers += 1;
        for (const name of names(stayed)) segmentPreview(name)[change.unchanged || !change.sendFields ? 'unchanged' : 'changed'] += 1;
      }
      // Braze has the profile under another spelling of its GUID: renamed to the canonical one first.
      const renamedKey = normalizeGuids && prior ? canonicalKey(prior.k) : undefined;
      const rename = renamedKey ? { from: prior!.k.slice(2) } : undefined;
      // A profile Braze holds in the other form is written in this one, whatever else changed.
      const rewrite = switching && prior !== undefined;
      if (change.unchanged && !rename && !rewrite) {
        totals.rowsSkippedUnchanged += profile.rows;
        await keepPrior(hash, prior!, nextMask);
        continue;
      }
      if (change.unchanged && !rewrite) {
        // Nothing else changed: the rename alone goes (no data point).
        totals.rowsSkippedUnchanged += profile.rows;
        const identifier = identifierFromKey(renamedKey!);
        if (dry) {
          tally(identifier, 0, 0, [], {}, {}, 'renames');
          preview.renamed += 1;
        }
        await sentWriter?.writeSent({ h: hash, k: prior!.k, p: profileStateOf(prior!) });
        await keep({ h: hash, k: renamedKey!, m: names(nextMask), f: prior!.f, a: prior!.a, c: prior!.c });
        await packer.add({ hash, identifier, attributes: {}, rows: 0, source: sourceOf(profile), rename });
        await touch(hash, 'renames');
        totals.usersEnqueued += 1;
        continue;
      }
      const membership = rewrite
        ? { ...encoding.clearing(previousForm, priorMask), ...encoding.full(nextMask) }
        : encoding.change(change.join, change.leave, nextMask);
      let key: string;
      let identifier: BrazeIdentifier;
      let fields: Record<string, JsonValue> = {};
      let fingerprint: string;
      let hashes: string | undefined;
      let consent = prior?.c;
      let consentSent: string[] = [];
      if (change.sendFields) {
        // A profile whose fields are sent: its row is parsed now (unchanged ones never are).
        if (profile.first === undefined) throw new Error(`run ${run.runId} shard ${shard}: a profile to map has no map line kept`);
        const first: MapLine = parseMapLine(profile.first, `shard ${shard}`);
        const mapped = mapperOf(first.g)(first.v);
        if (!mapped.ok) throw new Error(`run ${run.runId}: a row that had an identifier when mapped lost it (${mapped.reason})`);
        ({ key, identifier, fields } = mapped.profile);
        fingerprint = fingerprintNow;
        hashes = fieldHashes(fieldNames, fields);
        // A subscription state goes only when CI's value for it changed since Braze last took one from
        // us (or never did): re-sent because another field changed, it would undo an unsubscribe made in Braze.
        if (mapsSubscriptions) ({ fields, sent: consentSent, next: consent } = consentToSend(fields, prior?.c));
        for (const issue of mapped.profile.fieldIssues) {
          await rejects.writeLine(
            rejectCsvLine({
              outcome: 'field_dropped',
              source: partitions[first.p].partition.blobName,
              row: first.r,
              identifier: describeIdentifier(identifier),
              reason: issue + atLine(first.l ?? 0),
            }).slice(0, -1),
          );
        }
      } else {
        key = renamedKey ?? prior!.k;
        identifier = identifierFromKey(key);
        fingerprint = prior!.f;
        hashes = prior!.a;
      }
      const attributes = { ...(change.sendFields ? fields : {}), ...membership };
      if (dry) {
        const fieldsChangedNow = change.sendFields
          ? [...changedAttributes(fieldNames, hashes!, prior?.a).filter((name) => !BRAZE_SUBSCRIPTION_FIELDS.has(name)), ...consentSent]
          : [];
        tally(identifier, change.join, change.leave, fieldsChangedNow, membership, attributes, rewrite && change.unchanged ? 'rewrites' : undefined);
        if (rewrite && !change.unchanged) preview.rewritten += 1;
        if (rename) preview.renamed += 1;
      }
      // What Braze does not take puts the old spelling back in the state: the next run asks for the rename again.
      await sentWriter?.writeSent({ h: hash, k: rename ? prior!.k : key, p: prior ? profileStateOf(prior) : null });
      await keep({ h: hash, k: key, m: names(nextMask), f: fingerprint, a: hashes, c: consent });
      await packer.add({ hash, identifier, attributes, rows: profile.rows, source: sourceOf(profile), ...(rename ? { rename } : {}) });
      await touch(hash, !prior ? 'joins' : change.sendFields ? 'changes' : rewrite ? 'rewrites' : change.join ? 'joins' : 'leaves', Object.keys(attributes));
      totals.rowsEnqueued += profile.rows;
      totals.usersEnqueued += 1;
    }
    // Profiles Braze has as members that this refresh no longer lists have left.
    let notCleared = 0;
    for (const [hash, prior] of before) {
      if (profiles.has(hash)) continue;
      const priorMask = membersOf(prior).mask;
      const identified = prior.k.startsWith('e:') ? hints.get(hash) : undefined;
      if (identified?.ambiguous) {
        // Rows of several customer IDs carry this e-mail now: cleared by e-mail, the change would land
        // on one of them (a member), and which one the e-mail-only profile became is not known.
        await rejects.writeLine(
          rejectCsvLine({
            outcome: 'rejected',
            source: 'leaver',
            row: '',
            identifier: describeIdentifier(identifierFromKey(prior.k)),
            reason: `not cleared (${names(priorMask).join(', ')}): rows of several customer IDs carry this e-mail now, and Braze would apply a clear by e-mail to one of them; merge or clear the e-mail-only profile in Braze`,
          }).slice(0, -1),
        );
        notCleared += 1;
        continue;
      }
      if (identified) {
        // The e-mail-keyed profile's row has a customer ID now. Cleared by e-mail, the change would land
        // on the identified profile holding the address (Braze updates that one first); instead the
        // e-mail-only profile is merged into it (/users/identify), and what the merge brings that this
        // refresh does not list is cleared by external_id. Its record leaves the state: the profile
        // is the external_id's now, whose record the refresh writes in its own shard.
        // Only this run's segments: a membership of another one may be the identified profile's own.
        const leave = (priorMask & bits.syncedMask & ~identified.bits) >>> 0;
        if (dry) preview.identified += 1;
        await sentWriter?.writeSent({ h: hash, k: prior.k, p: profileStateOf(prior) });
        await enqueueExit(hash, { external_id: identified.externalId }, leave, identified.bits, priorMask, { email: prior.k.slice(2) });
        continue;
      }
      const leave = (priorMask & bits.syncedMask) >>> 0;
      const carried = (priorMask & ~bits.syncedMask) >>> 0;
      if (leave === 0 && !(switching && priorMask !== 0)) {
        await keepPrior(hash, prior, carried);
        continue;
      }
      await sentWriter?.writeSent({ h: hash, k: prior.k, p: profileStateOf(prior) });
      await keepPrior(hash, prior, carried);
      await enqueueExit(hash, identifierFromKey(prior.k), leave, carried, priorMask);
    }
    for (const stray of strays) {
      // Another spelling of a GUID whose canonical spelling is a profile of its own: in Braze, two
      // users. This one is cleared of every membership under its own external_id and leaves the state.
      const leave = bits.maskOf(stray.m);
      if (leave !== 0) await enqueueExit(keyHash(stray.k), identifierFromKey(stray.k), leave, 0, leave);
    }
    if (strays.length)
      deps.log.warn(
        `run ${run.runId} shard ${shard}: ${strays.length} profiles were in Braze under two spellings of one GUID; the other spelling's memberships are cleared`,
      );
    if (notCleared) deps.log.warn(`run ${run.runId} shard ${shard}: ${notCleared} e-mail-keyed leavers not cleared (see the rejects report)`);
    await writers.close(signal);
  } catch (error) {
    await writers.abort(error);
    throw error;
  }
  totals.batchesEnqueued = packer.messages;
  if (dry) {
    preview.requests = packer.requests;
    totals.preview = preview;
  }
  if (run.dryRun) return totals;
  totals.stateBlob = shardStateBlobName(run.modelJsonPath, run.runId, shard, owner);
  totals.stateFallback = fallback || undefined;
  totals.guidKeys = normalizeGuids || undefined;
  totals.membershipForm = formKey(encoding.form);
  if (switching) totals.membershipFrom = formKey(previousForm);
  return totals;
}

/**
 * The shard's profiles in this refresh, from every partition's map output: a profile in several
 * segments becomes one, its first row — largest segment first, as the sending order has always
 * been — deciding its fields. A second row of a profile in the same segment is rejected.
 */
export async function gatherShard(
  deps: ConnectorDeps,
  run: RunRecord,
  shard: number,
  mapOwners: Map<number, string>,
  segments: SegmentRefresh[],
  keyOf: ReturnType<typeof createKeyMapper>,
  totals: UnitTotals,
  /** The previous state's records, by key hash (none: no profile has a prior record). */
  priors: Map<string, StateRecord> | undefined,
  keepsLine: KeepsLine,
  signal: AbortSignal,
): Promise<{ profiles: Map<string, ShardProfile>; rejectLines: RejectLine[]; hintLines: string[] }> {
  const partitions = partitionList(segments);
  const state = deps.storage.stateContainer;
  const bits = runMembershipBits(segments);
  const segmentBits = segments.map((s) => bits.bit(s.attribute));
  const bySize = segments.map((s, i) => ({ i, bytes: segmentBytes(s) })).sort((a, b) => b.bytes - a.bytes || a.i - b.i);
  const rejectLines: RejectLine[] = [];
  const profiles = new Map<string, ShardProfile>();
  const hintLines: string[] = [];
  for (const { i: segmentIndex } of bySize) {
    for (let p = 0; p < partitions.length; p++) {
      if (partitions[p].segmentIndex !== segmentIndex) continue;
      const blobName = mapOutputBlobName(run.runId, p, mapOwners.get(p)!, shard);
      let buf: Buffer;
      try {
        buf = await state.getBlobClient(blobName).downloadToBuffer();
      } catch (error) {
        if (isNotFound(error)) throw new Error(`run ${run.runId}: map output ${blobName} is missing`);
        throw error;
      }
      signal.throwIfAborted();
      const bit = segmentBits[segmentIndex];
      // Read from the bytes, every string copied out: what the shard keeps of a partition's output
      // (a key, a line it must map) never holds the whole output alive, as slices of its text would.
      for (let start = 0; start < buf.length;) {
        let end = buf.indexOf(10, start);
        if (end < 0) end = buf.length;
        const at = start;
        start = end + 1;
        if (end === at) continue;
        if (isIdentityHintAt(buf, at)) {
          // Read once the profiles are known, and only those that name one of them (or a leaver).
          hintLines.push(buf.toString('utf8', at, end));
          continue;
        }
        const hash = readMapLineHash(buf, at, blobName);
        const profile = profiles.get(hash);
        if (!profile) {
          const head = readMapLineHead(buf, at, end, blobName);
          const prior = priors?.get(hash);
          const first = keepsLine(prior, head.x) ? buf.toString('utf8', at, end) : undefined;
          profiles.set(hash, { bits: bit, claimed: bit, rows: 1, first, p: head.p, r: head.r, l: head.l, prior });
          continue;
        }
        if (profile.claimed & bit) {
          const line = parseMapLine(buf.toString('utf8', at, end), blobName);
          const key = keyOf(line.v);
          const identifier = key.ok ? describeIdentifier(identifierFromKey(key.key)) : '';
          rejectLines.push(rejectedRow(totals, partitions[line.p].partition.blobName, line, identifier, DUPLICATE));
          continue;
        }
        profile.claimed |= bit;
        profile.bits = (profile.bits | bit) >>> 0;
        profile.rows += 1;
      }
    }
  }

  return { profiles, rejectLines, hintLines };
}

/**
 * The identity hints that name an e-mail key this shard has a use for: a profile of the refresh
 * keyed by that e-mail, or one of the state's. Most hints name none, and are never parsed.
 */
export function identityHints(hintLines: string[], wanted: (emailKeyHash: string) => boolean, segmentBits: number[]): Map<string, IdentifiedEmail> {
  const hints = new Map<string, IdentifiedEmail>();
  for (const lineText of hintLines) {
    if (!wanted(lineText.slice(6, 22))) continue;
    const hint = parseIdentityHint(lineText, 'identity hint');
    const known = hints.get(hint.e);
    // Two customer IDs for one e-mail: which one the e-mail-only profile became is not known.
    if (known && known.externalId !== hint.i) known.ambiguous = true;
    else hints.set(hint.e, { externalId: hint.i, bits: ((known?.bits ?? 0) | segmentBits[hint.g]) >>> 0, ambiguous: known?.ambiguous ?? false });
  }
  return hints;
}

/** Where a profile's deciding row is, for what Braze answers about it. */
export function sourceOf(line: Pick<MapLine, 'p' | 'r' | 'l'>): { partition: number; row: number; line?: number } {
  return line.l ? { partition: line.p, row: line.r, line: line.l } : { partition: line.p, row: line.r };
}

/** An input row a shard step rejects: counted under its reason, reported with where it is in the file. */
export function rejectedRow(totals: UnitTotals, source: string, line: MapLine, identifier: string, reason: string): RejectLine {
  totals.rowsRejectedInput += 1;
  totals.rejectedByReason[reason] = (totals.rejectedByReason[reason] ?? 0) + 1;
  return { outcome: 'rejected', source, row: line.r, identifier, reason: reason + atLine(line.l ?? 0) };
}

/** Every row of the profiles the erasure table lists (its own and their segments'); none without one. */
export async function erasureListedRows(
  deps: ConnectorDeps,
  run: RunRecord,
  shard: number,
  mapOwners: Map<number, string>,
  segments: SegmentRefresh[],
  bits: MembershipBits,
  profiles: Map<string, ShardProfile>,
  signal: AbortSignal,
): Promise<MapLine[]> {
  if (!segments.some((segment) => segment.erasure)) return [];
  const eraseBit = bits.bit(ERASURE_ATTRIBUTE);
  const listed = new Set([...profiles].filter(([, profile]) => profile.bits & eraseBit).map(([hash]) => hash));
  return listed.size ? rowsOf(deps, run, shard, mapOwners, listed, signal) : [];
}

/** Every map line of these profiles in the shard's map outputs (read again: rare, and only for them). */
export async function rowsOf(
  deps: ConnectorDeps,
  run: RunRecord,
  shard: number,
  mapOwners: Map<number, string>,
  hashes: Set<string>,
  signal: AbortSignal,
): Promise<MapLine[]> {
  const lines: MapLine[] = [];
  const firstOfSegment = new Set<string>();
  for (const [p, owner] of [...mapOwners].sort((a, b) => a[0] - b[0])) {
    const blobName = mapOutputBlobName(run.runId, p, owner, shard);
    const text = (await deps.storage.stateContainer.getBlobClient(blobName).downloadToBuffer()).toString('utf8');
    signal.throwIfAborted();
    for (const lineText of text.split('\n')) {
      if (!lineText || lineText.startsWith(IDENTITY_HINT_PREFIX)) continue;
      const hash = mapLineHash(lineText, blobName);
      if (!hashes.has(hash)) continue;
      const line = parseMapLine(lineText, blobName);
      // A second row of the profile in one segment was rejected as a duplicate already.
      const seen = `${hash}:${line.g}`;
      if (firstOfSegment.has(seen)) continue;
      firstOfSegment.add(seen);
      lines.push(line);
    }
  }
  return lines.sort((a, b) => a.p - b.p || a.r - b.r);
}

/** What both kinds of shard step work with: the run's segments and destination, membership bits, row mappers. */
export async function shardContext(deps: ConnectorDeps, run: RunRecord) {
  const segments = await readSources(deps, run);
  const destination = runDestination(deps, run);
  const bits = runMembershipBits(segments);
  const columns = canonicalPartitionColumns(destination);
  const identityOptions = { normalizeGuids: normalizesGuids(destination, segments) };
  const fieldNames = mappedFieldNames(destination);
  const mappers = new Map<number, RowMapper>();
  const mapperOf = (g: number) => {
    let mapper = mappers.get(g);
    if (!mapper) mappers.set(g, (mapper = createRowMapper(destination, segments[g].attributes, columns, identityOptions)));
    return mapper;
  };
  return {
    segments,
    destination,
    partitions: partitionList(segments),
    state: deps.storage.stateContainer,
    bits,
    names: (mask: number) => bits.namesOf(mask),
    mapperOf,
    keyOf: createKeyMapper(destination, columns, identityOptions),
    normalizeGuids: identityOptions.normalizeGuids,
    // The attributes a mapped row may carry, in a fixed order (for the per-field hashes in the state).
    fieldNames,
    // Of them, those a full send pays data points for: subscription states log none.
    paidFieldCount: fieldNames.filter((name) => !BRAZE_SUBSCRIPTION_FIELDS.has(name)).length,
    encoding: membershipEncoding(destination, bits),
  };
}

/**
 * A shard step's outputs: its next state and what it sent (none for a dry run, which writes no
 * state and sends nothing: its packer only counts the messages and requests it would make), its
 * rejects, and the batches. `keep` writes a profile of the next state that is still a member.
 */
export function shardWriters(deps: ConnectorDeps, run: RunRecord, shard: number, owner: string, totals: UnitTotals) {
  const state = deps.storage.stateContainer;
  const stateWriter = run.dryRun ? undefined : new NdjsonWriter(state, shardStateBlobName(run.modelJsonPath, run.runId, shard, owner));
  const sentWriter = run.dryRun ? undefined : new NdjsonWriter(state, sentBlobName(run.runId, shard, owner));
  const rejects = new BlobLineWriter(state, shardRejectsPartName(run.runId, shard, owner), 'text/csv; charset=utf-8');
  // A guarded run's batches wait in a blob until the guard lets them go (or a person does).
  const staged = run.staged && !run.dryRun ? new BlobLineWriter(state, stagedBatchesName(run.runId, shard, owner), 'text/plain') : undefined;
  const sink = run.dryRun ? undefined : staged ? (text: string) => staged.writeLine(text) : deps.storage.batchQueue;
  const packer = new BatchPacker(sink, run.runId, `s${String(shard).padStart(4, '0')}-`, deps.brazeFor(runDestination(deps, run).workspace).objectsPerRequest);
  const touched = run.dryRun ? undefined : new BlobLineWriter(state, touchedShardBlobName(run.runId, shard, owner), 'application/x-ndjson');
  const touchedNames = new Map<string, number>();
  return {
    stateWriter,
    sentWriter,
    rejects,
    packer,
    /** What the run did to a profile, for GET /api/users/{id}: the change and the attribute names, or the reason a row was not sent. */
    touch: async (hash: string, change: string, attributes: string[] = []) => {
      if (!touched) return;
      // One short line per profile sent, written by hand; each attribute list (a handful per shard)
      // once, as a numbered line the profile lines refer to.
      const key = attributes.join('\u0000');
      let list = touchedNames.get(key);
      if (list === undefined) {
        list = touchedNames.size;
        touchedNames.set(key, list);
        await touched.writeLine(`{"n":${list},"a":${JSON.stringify(attributes)}}`);
      }
      await touched.writeLine(`{"h":"${hash}","c":"${change}","n":${list}}`);
    },
    keep: async (record: StateRecord) => {
      if (record.m.length === 0) return;
      totals.profiles += 1;
      if (record.k.charCodeAt(0) === 101 /* e */) totals.emailKeys = (totals.emailKeys ?? 0) + 1;
      await stateWriter?.writeState(record);
    },
    /** A profile of the previous state kept as it was: its line written again as it was read (it has memberships). */
    keepLine: async (line: StateLine) => {
      totals.profiles += 1;
      if (line.keyedByEmail) totals.emailKeys = (totals.emailKeys ?? 0) + 1;
      await stateWriter?.writeLine(line.text);
    },
    /** The last batches sent, then the blobs committed. */
    close: async (signal: AbortSignal) => {
      await packer.close();
      signal.throwIfAborted();
      await Promise.all([stateWriter?.close(), sentWriter?.close(), rejects.close(), staged?.close(), touched?.close()]);
    },
    /** Nothing of a shard step that did not finish is committed. */
    abort: (error: unknown) =>
      Promise.all([stateWriter?.abort(error), sentWriter?.abort(error), rejects.abort(error), staged?.abort(error), touched?.abort(error)]),
  };
}
