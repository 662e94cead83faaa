import type { JsonValue } from '../ci/dataTypes';
import { segmentAttribute, type DestinationConfig } from '../config/syncConfig';
import type { MembershipBits } from './membershipBits';

/**
 * How a destination's memberships are written in Braze. `flags`: `<attribute>: true` per segment,
 * the leaver value when a member leaves. `list`: one array attribute holding the identifiers of the
 * segments the profile is in, always sent whole — Braze applies `add`, then `remove`, then a whole
 * set within one request (braze-docs #11289), so increments could not be mixed safely — and one
 * data point however many segments change (data_points.md: "If you set the whole array at once, it
 * will count as a single data point"). The delivered state keeps memberships as segment attribute
 * names either way; only what is sent differs.
 */
export type MembershipForm = { mode: 'flags' } | { mode: 'list'; attribute: string };

export const FLAGS: MembershipForm = { mode: 'flags' };

/** A form as a manifest and a step's totals keep it: `flags`, or `list:<attribute>`. */
export function formKey(form: MembershipForm): string {
  return form.mode === 'flags' ? 'flags' : `list:${form.attribute}`;
}

/** The form a key names; none (a state written before forms were recorded) is flags. */
export function formFromKey(key: string | undefined): MembershipForm {
  return key?.startsWith('list:') ? { mode: 'list', attribute: key.slice('list:'.length) } : FLAGS;
}

/** Whether two forms write memberships the same way. */
export function sameForm(a: MembershipForm, b: MembershipForm): boolean {
  return a.mode === b.mode && (a.mode === 'flags' || a.attribute === (b as { attribute: string }).attribute);
}

/** The form a destination's config asks for. */
export function formOf(destination: DestinationConfig): MembershipForm {
  return destination.membership.mode === 'list' ? { mode: 'list', attribute: destination.membership.attribute } : { mode: 'flags' };
}

export interface MembershipEncoding {
  readonly form: MembershipForm;
  /** What a profile whose memberships went `join` (set) and `leave` (cleared) to `after` is sent; nothing when neither. */
  change(join: number, leave: number, after: number): Record<string, JsonValue>;
  /** The memberships `after` written in full: a profile whose earlier form is being replaced. */
  full(after: number): Record<string, JsonValue>;
  /** Removes what a state of `form` left in Braze for memberships `mask` (a switch of form). */
  clearing(form: MembershipForm, mask: number): Record<string, JsonValue>;
  /** Data points of the memberships `mask` sent in full. */
  fullSendPoints(mask: number): number;
}

export function membershipEncoding(destination: DestinationConfig, bits: MembershipBits): MembershipEncoding {
  const form = formOf(destination);
  const names = (mask: number) => bits.namesOf(mask);
  const clearing = (previous: MembershipForm, mask: number): Record<string, JsonValue> => {
    const attributes: Record<string, JsonValue> = {};
    if (previous.mode === 'list') attributes[previous.attribute] = null;
    else for (const name of names(mask)) attributes[name] = null;
    return attributes;
  };
  const membership = destination.membership;
  if (membership.mode === 'flags') {
    const full = (after: number) => Object.fromEntries(names(after).map((name) => [name, true]));
    return {
      form,
      change: (join, leave) => {
        const attributes: Record<string, JsonValue> = {};
        for (const name of names(join)) attributes[name] = true;
        for (const name of names(leave)) attributes[name] = destination.leaverValue;
        return attributes;
      },
      full,
      clearing,
      fullSendPoints: (mask) => names(mask).length,
    };
  }
  // In config order, so an unchanged set is the same list; a membership of a segment no longer
  // configured has no identifier to list and leaves the list.
  const order = destination.segments.map((segment) => ({ attribute: segmentAttribute(segment), id: segment.brazeSegmentId }));
  const list = (after: number): JsonValue => {
    const held = new Set(names(after));
    const ids = order.filter((segment) => held.has(segment.attribute)).map((segment) => segment.id);
    return ids.length ? ids : membership.whenEmpty;
  };
  const full = (after: number) => ({ [membership.attribute]: list(after) });
  return {
    form,
    change: (join, leave, after) => ((join | leave) === 0 ? {} : full(after)),
    full,
    clearing,
    fullSendPoints: (mask) => (mask ? 1 : 0),
  };
}
