/**
 * Facts of Braze's REST API that every layer of the connector checks against — the mapping config's
 * validation, the packer, the client — kept below them all.
 */

/** Braze's documented limits for POST /users/track. */
export const BRAZE_MAX_OBJECTS_PER_REQUEST = 75;
/** "Each request may batch up to 50 updates" on Monthly Active Users (CY 24-25) contracts (post_user_track.md). */
export const BRAZE_MAU_OBJECTS_PER_REQUEST = 50;
export const BRAZE_MAX_STRING_LENGTH = 255;
export const BRAZE_TRACK_PATH = '/users/track';
/** Braze's default workspace limit for /users/track; used until a response tells us the real one. */
export const BRAZE_DEFAULT_RATE_LIMIT_REQUESTS = 3_000;
export const BRAZE_DEFAULT_RATE_LIMIT_WINDOW_MS = 3_000;
/**
 * Merges an unidentified profile into an identified one (needs the key's users.identify
 * permission). Its own rate limit (20,000 a minute, shared with /users/delete, /users/merge and the
 * alias endpoints), not /users/track's; at most 50 entries per request (post_user_identify.md).
 */
export const BRAZE_IDENTIFY_PATH = '/users/identify';
export const BRAZE_MAX_IDENTIFY_PER_REQUEST = 50;
/**
 * Renames a profile's external_id, keeping the old one as a deprecated ID (needs the key's
 * users.external_ids.rename permission). 1,000 requests a minute, at most 50 renames per request.
 */
export const BRAZE_RENAME_PATH = '/users/external_ids/rename';
export const BRAZE_MAX_RENAMES_PER_REQUEST = 50;
/**
 * Deletes users (needs the key's users.delete permission); cannot be undone. At most 50 identifiers
 * of one kind per request; its own rate limit, not /users/track's (post_user_delete.md).
 */
export const BRAZE_DELETE_PATH = '/users/delete';
export const BRAZE_MAX_DELETES_PER_REQUEST = 50;
/** Asks Braze to export a segment's users (needs the key's users.export.segment permission). */
export const BRAZE_EXPORT_SEGMENT_PATH = '/users/export/segment';

/**
 * Fields of a /users/track object that are never attributes. `email` and `phone` are both: the
 * identifier when nothing else identifies the object, an attribute beside an external_id or alias.
 */
export const NOT_ATTRIBUTE_FIELDS: readonly string[] = ['external_id', 'user_alias', 'braze_id', '_update_existing_only'];

/**
 * Subscription state (user_attributes_object.md): `email_subscribe` and `push_subscribe` take
 * "opted_in", "unsubscribed" or "subscribed" (neither opted in nor out); a `subscription_groups`
 * entry's `subscription_state` is "subscribed" or "unsubscribed". Changing any of them logs no data
 * point (data_points.md).
 */
export const BRAZE_CHANNEL_STATES = ['opted_in', 'unsubscribed', 'subscribed'] as const;
export const BRAZE_GROUP_STATES = ['subscribed', 'unsubscribed'] as const;
/** The profile fields that hold subscription state. */
export const BRAZE_SUBSCRIPTION_FIELDS: ReadonlySet<string> = new Set(['email_subscribe', 'push_subscribe', 'subscription_groups']);
export const brazeChannelField = (channel: 'email' | 'push') => (channel === 'email' ? 'email_subscribe' : 'push_subscribe');
