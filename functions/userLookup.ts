import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { formatIssues } from '../shared/errors';
import { lookUpUser, userQuerySchema } from '../shared/sync/userLookup';
import { connector } from './connector';

/** Where a user stands with a destination: GET /api/users/{id}?destination=…[&by=email|alias][&instance=…]. */
export async function userLookup(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const parsed = userQuerySchema.safeParse(Object.fromEntries(request.query.entries()));
  if (!parsed.success) return { status: 400, jsonBody: { error: formatIssues('query', parsed.error) } };
  const id = request.params.id ?? '';
  if (!id.trim()) return { status: 400, jsonBody: { error: 'the user id is missing' } };
  const found = await lookUpUser(connector(), { ...parsed.data, id });
  if (found.kind === 'refused') return { status: found.status, jsonBody: { error: found.reason } };
  return { status: 200, jsonBody: found.body };
}

export const userLookupOptions: HttpFunctionOptions = {
  methods: ['GET'],
  authLevel: 'function',
  route: 'users/{id}',
  handler: userLookup,
};

app.http('userLookup', userLookupOptions);
