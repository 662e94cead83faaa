/** Braze echoes the API key in 401 bodies; every message that leaves the client goes through here. */
export function redactSecret(text: string, secret: string): string {
  let out = secret ? text.split(secret).join('[redacted]') : text;
  // Anything that looks like a Braze REST key (a UUID) or a bearer token is redacted too.
  out = out.replace(/Bearer\s+[A-Za-z0-9._~+/=-]+/gi, 'Bearer [redacted]');
  out = out.replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '[redacted]');
  return out;
}
