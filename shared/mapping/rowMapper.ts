import type { DestinationConfig } from '../config/syncConfig';
import { convertCell, type JsonValue } from '../ci/dataTypes';
import type { CdmAttribute } from '../ci/modelJson';
import type { PartitionColumns } from '../ci/partitionReader';
import { BRAZE_MAX_STRING_LENGTH } from '../brazeApi';
import { InvalidInputError } from '../errors';
import { normalizeEmail } from './email';
import { isStandardAttribute, normalizeStandardAttribute, withoutInnerNulls } from './standardAttributes';
import { profileKeyOf, type BrazeIdentifier } from './profileIdentity';
import { canonicalGuid } from './customerId';
import { subscriptionGroupsValue, subscriptionReader, type SubscriptionReading } from './subscriptions';
import { BRAZE_SUBSCRIPTION_FIELDS, brazeChannelField } from '../brazeApi';

export interface MappedProfile {
  /** Identity of the profile across segments and refreshes (see profileKeyOf). */
  key: string;
  identifier: BrazeIdentifier;
  /** Mapped attributes (not memberships), as they will be sent. */
  fields: Record<string, JsonValue>;
  /** Fields dropped from this row, each with the reason: reported, never silently mangled. */
  fieldIssues: string[];
}

export type RowMapping = { ok: true; profile: MappedProfile } | { ok: false; reason: string };

export type RowMapper = (values: string[]) => RowMapping;

interface FieldColumn {
  column: string;
  brazeName: string;
  attribute: CdmAttribute;
}

/**
 * Checks once per segment that every column the config names exists in the entity, so a typo in
 * the config fails the run with a clear message instead of rejecting every row.
 */
export function checkColumns(destination: DestinationConfig, table: string, attributes: CdmAttribute[]): void {
  const names = new Set(attributes.map((a) => a.name));
  const wanted: [string, string | undefined][] = [
    ['matching.emailColumn', destination.matching.emailColumn],
    ['matching.customerIdColumn', destination.matching.customerIdColumn],
    ...Object.keys(destination.fields).map((column): [string, string] => [`fields.${column}`, column]),
    ...destination.subscriptions.map((entry, i): [string, string] => [`subscriptions[${i}].column`, entry.column]),
  ];
  for (const [setting, column] of wanted) {
    if (column !== undefined && !names.has(column)) {
      throw new InvalidInputError(
        `Mapping config: ${setting} names column "${column}", which entity "${table}" does not have (it has: ${[...names].join(', ')})`,
      );
    }
  }
}

type Identity = { ok: true; identifier: BrazeIdentifier; key: string; email?: string; rawEmail: string } | { ok: false; reason: string };

/** How a run maps identifiers beyond the destination's config. */
export interface IdentityOptions {
  /** GUID customer IDs in their canonical spelling (see normalizesGuids). */
  normalizeGuids: boolean;
}

/** Which Braze identifier a row gets; the one rule both the full mapping and the key-only pass use. */
function identifierResolver(
  destination: DestinationConfig,
  emailIndex: number,
  customerIdIndex: number,
  options: IdentityOptions,
): (values: string[]) => Identity {
  const { customerIdIsExternalId, fallbackIdentifiers, aliasLabel } = destination.matching;
  return (values) => {
    const written = customerIdIndex >= 0 ? values[customerIdIndex].trim() : '';
    const customerId = options.normalizeGuids && written && customerIdIsExternalId ? (canonicalGuid(written) ?? written) : written;
    const rawEmail = emailIndex >= 0 ? values[emailIndex] : '';
    const email = rawEmail.trim() ? normalizeEmail(rawEmail) : undefined;
    if (customerIdIsExternalId && customerId) {
      if (customerId.length > BRAZE_MAX_STRING_LENGTH) return { ok: false, reason: `external_id longer than ${BRAZE_MAX_STRING_LENGTH} characters` };
      const identifier = { external_id: customerId };
      return { ok: true, identifier, key: profileKeyOf(identifier), email, rawEmail };
    }
    for (const fallback of fallbackIdentifiers) {
      if (fallback === 'email' && email) {
        const identifier = { email };
        return { ok: true, identifier, key: profileKeyOf(identifier), email, rawEmail };
      }
      if (fallback === 'user_alias' && customerId && customerId.length <= BRAZE_MAX_STRING_LENGTH) {
        const identifier = { user_alias: { alias_name: customerId, alias_label: aliasLabel } };
        return { ok: true, identifier, key: profileKeyOf(identifier), email, rawEmail };
      }
    }
    const reason = rawEmail.trim() && !email ? 'no external_id and an invalid e-mail' : 'no usable identifier (no customer ID, no valid e-mail)';
    return { ok: false, reason };
  };
}

function columnIndex(columns: PartitionColumns, column: string | undefined): number {
  if (column === undefined) return -1;
  const index = columns.indexOf.get(column);
  if (index === undefined) throw new InvalidInputError(`partition has no column "${column}"`);
  return index;
}

/**
 * Only the profile key of a row, or why it has none: what a map step needs to route the row to its
 * shard. `emailKey` is the key the row's e-mail would have had as its identifier, for a row keyed
 * by external_id when the destination keys rows by e-mail too: such a profile may have been keyed
 * by that e-mail before it got its customer ID.
 */
export function createKeyMapper(
  destination: DestinationConfig,
  columns: PartitionColumns,
  options: IdentityOptions,
): (values: string[]) => { ok: true; key: string; emailKey?: string } | { ok: false; reason: string } {
  const identify = identifierResolver(
    destination,
    columnIndex(columns, destination.matching.emailColumn),
    columnIndex(columns, destination.matching.customerIdColumn),
    options,
  );
  const emailFallback = destination.matching.fallbackIdentifiers.includes('email');
  return (values) => {
    const identity = identify(values);
    if (!identity.ok) return identity;
    if (emailFallback && identity.email && 'external_id' in identity.identifier) {
      return { ok: true, key: identity.key, emailKey: profileKeyOf({ email: identity.email }) };
    }
    return { ok: true, key: identity.key };
  };
}

/** Builds the row → profile function for one partition's column layout. */
export function createRowMapper(destination: DestinationConfig, attributes: CdmAttribute[], columns: PartitionColumns, options: IdentityOptions): RowMapper {
  const byName = new Map(attributes.map((a) => [a.name, a]));
  const indexOf = (column: string | undefined): number => columnIndex(columns, column);
  const emailIndex = indexOf(destination.matching.emailColumn);
  const customerIdIndex = indexOf(destination.matching.customerIdColumn);
  const fieldColumns: (FieldColumn & { index: number })[] = Object.entries(destination.fields)
    .filter(([, brazeName]) => !BRAZE_SUBSCRIPTION_FIELDS.has(brazeName))
    .map(([column, brazeName]) => ({
      column,
      brazeName,
      attribute: byName.get(column) ?? { name: column, dataType: 'string' },
      index: indexOf(column),
    }));
  const subscriptionColumns = subscriptionColumnsOf(destination, byName, indexOf);
  const emailIsField = Object.values(destination.fields).includes('email');
  const identify = identifierResolver(destination, emailIndex, customerIdIndex, options);

  return (values) => {
    const identity = identify(values);
    if (!identity.ok) return identity;
    const { identifier, key, email, rawEmail } = identity;
    const fieldIssues: string[] = [];

    const fields: Record<string, JsonValue> = {};
    if (emailIndex >= 0 && !('email' in identifier) && !emailIsField) {
      if (email) fields.email = email;
      else if (rawEmail.trim()) fieldIssues.push('email: invalid e-mail address, not sent');
    }
    for (const field of fieldColumns) {
      const converted = convertCell(values[field.index], field.attribute.dataType);
      if (!converted.ok) {
        fieldIssues.push(`${field.brazeName}: ${converted.reason} (${field.attribute.dataType}), not sent`);
        continue;
      }
      let value = converted.value;
      if (isStandardAttribute(field.brazeName)) {
        const normalized = normalizeStandardAttribute(field.brazeName, value, { phoneCountry: destination.phoneCountry });
        if (!normalized.ok) {
          fieldIssues.push(`${field.brazeName}: ${normalized.reason}, not sent`);
          continue;
        }
        value = normalized.value;
      } else if (value !== null && typeof value === 'object') value = withoutInnerNulls(value);
      if (field.brazeName === 'email' && typeof value === 'string') {
        const normalized = normalizeEmail(value);
        if (!normalized) {
          fieldIssues.push('email: invalid e-mail address, not sent');
          continue;
        }
        value = normalized;
      }
      const tooLong = longestString(value);
      if (tooLong > BRAZE_MAX_STRING_LENGTH) {
        fieldIssues.push(`${field.brazeName}: value of ${tooLong} characters exceeds Braze's ${BRAZE_MAX_STRING_LENGTH}, not sent`);
        continue;
      }
      fields[field.brazeName] = value;
    }
    if (subscriptionColumns.length) mapSubscriptions(subscriptionColumns, values, fields, fieldIssues);
    return { ok: true, profile: { key, identifier, fields, fieldIssues } };
  };
}

interface SubscriptionColumn {
  index: number;
  attribute: CdmAttribute;
  /** `email_subscribe` / `push_subscribe`, or the subscription group's ID. */
  target: { field: string } | { groupId: string };
  read: (value: JsonValue) => SubscriptionReading;
}

/**
 * The destination's subscription columns: its `subscriptions`, and a column `fields` maps straight
 * to email_subscribe or push_subscribe (read strictly: only Braze's state names).
 */
function subscriptionColumnsOf(destination: DestinationConfig, byName: Map<string, CdmAttribute>, indexOf: (column: string) => number): SubscriptionColumn[] {
  const attribute = (column: string): CdmAttribute => byName.get(column) ?? { name: column, dataType: 'string' };
  const columns: SubscriptionColumn[] = [];
  for (const [column, brazeName] of Object.entries(destination.fields))
    if (BRAZE_SUBSCRIPTION_FIELDS.has(brazeName))
      columns.push({ index: indexOf(column), attribute: attribute(column), target: { field: brazeName }, read: subscriptionReader('channel', {}) });
  for (const entry of destination.subscriptions)
    columns.push({
      index: indexOf(entry.column),
      attribute: attribute(entry.column),
      target: entry.channel ? { field: brazeChannelField(entry.channel) } : { groupId: entry.subscriptionGroupId!.toLowerCase() },
      read: subscriptionReader(entry.channel ? 'channel' : 'group', entry.values),
    });
  return columns;
}

/** A row's subscription states into its fields; an empty cell sends none, an unknown value is dropped with the reason. */
function mapSubscriptions(columns: SubscriptionColumn[], values: string[], fields: Record<string, JsonValue>, fieldIssues: string[]): void {
  const groups = new Map<string, string>();
  for (const column of columns) {
    const label = 'field' in column.target ? column.target.field : `subscription group ${column.target.groupId}`;
    const converted = convertCell(values[column.index], column.attribute.dataType);
    const reading = converted.ok ? column.read(converted.value) : { ok: false as const, reason: `${converted.reason} (${column.attribute.dataType})` };
    if (!reading.ok) {
      fieldIssues.push(`${label}: ${reading.reason}, not sent`);
      continue;
    }
    if (reading.state === undefined) continue;
    if ('field' in column.target) fields[column.target.field] = reading.state;
    else groups.set(column.target.groupId, reading.state);
  }
  if (groups.size) fields.subscription_groups = subscriptionGroupsValue(groups);
}

function longestString(value: JsonValue): number {
  if (typeof value === 'string') return value.length;
  if (Array.isArray(value)) return value.reduce<number>((max, v) => Math.max(max, longestString(v)), 0);
  if (value && typeof value === 'object') {
    return Object.entries(value).reduce<number>((max, [k, v]) => Math.max(max, k.length, longestString(v)), 0);
  }
  return 0;
}
