const EMAIL = /[^\s@"'<>(),;:[\]\\]+@[^\s@"'<>(),;:[\]\\]+\.[A-Za-z]{2,}/g;

/**
 * Every text that leaves the Braze client goes through here: Braze echoes the API key in 401
 * bodies, and a gateway's or Braze's error page may quote what it was sent (e-mail addresses).
 * Redacts the whole text first, then cuts it, so a cut can never leave half a key behind.
 */
export function redactSecret(text: string, secrets: string | Iterable<string>, maxChars = Number.POSITIVE_INFINITY): string {
  let out = text;
  for (const secret of typeof secrets === 'string' ? [secrets] : secrets) if (secret) out = out.split(secret).join('[redacted]');
  // Anything that looks like a Braze REST key (a UUID) or a bearer token is redacted too.
  out = out.replace(/Bearer\s+[A-Za-z0-9._~+/=-]+/gi, 'Bearer [redacted]');
  out = out.replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '[redacted]');
  out = out.replace(EMAIL, '[e-mail]');
  return out.length > maxChars ? `${out.slice(0, maxChars)}…` : out;
}
