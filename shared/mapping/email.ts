import { BRAZE_MAX_STRING_LENGTH } from '../brazeApi';

// Deliberately permissive beyond the basics: Braze does its own validation and reports per row.
const EMAIL_PATTERN = /^[^\s@"(),:;<>[\]\\]+@[^\s@"(),:;<>[\]\\]+\.[^\s@"(),:;<>[\]\\.]{2,}$/;

/** Trimmed and lower-cased e-mail, or undefined when it is not one Braze would accept. */
export function normalizeEmail(raw: string): string | undefined {
  const email = raw.trim().toLowerCase();
  if (email.length === 0 || email.length > BRAZE_MAX_STRING_LENGTH) return undefined;
  return EMAIL_PATTERN.test(email) ? email : undefined;
}
