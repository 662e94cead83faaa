import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { formatIssues } from '../shared/errors';
import { lookUpUser, userQuerySchema } from '../shared/sync/userLookup';
import { connector } from './connector';
import { queryParams } from './httpAnswers';

/** Where a user stands with a destination: GET /api/users/{id}?destination=…[&by=email|alias][&instance=…]. */
export async function userLookup(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const parsed = userQuerySchema.safeParse(queryParams(request.query), { reportInput: true });
  if (!parsed.success) return { status: 400, jsonBody: { error: formatIssues('query', parsed.error) } };
  // The host writes request URLs to its logs: an e-mail there would be PII in them.
  if (parsed.data.by === 'email')
    return {
      status: 400,
      jsonBody: {
        error:
          'an e-mail in a URL ends up in request logs: look the user up by external_id or alias, or run npm start -- --user ADDRESS --by email against the storage',
      },
    };
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
