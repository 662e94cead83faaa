import { app, type HttpFunctionOptions, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { formatIssues } from '../shared/errors';
import { InvalidInputError } from '../shared/errors';
import { runHistory, runHistoryQuerySchema } from '../shared/sync/runHistory';
import { connector } from './connector';
import { queryParams } from './httpAnswers';

export async function runList(request: HttpRequest, _context: InvocationContext): Promise<HttpResponseInit> {
  const parsed = runHistoryQuerySchema.safeParse(queryParams(request.query), { reportInput: true });
  if (!parsed.success) return { status: 400, jsonBody: { error: formatIssues('query', parsed.error) } };
  try {
    const deps = connector();
    return { status: 200, jsonBody: await runHistory(deps.runs, parsed.data, deps.clock.now()) };
  } catch (error) {
    if (error instanceof InvalidInputError) return { status: 400, jsonBody: { error: error.message } };
    throw error;
  }
}

export const runListOptions: HttpFunctionOptions = {
  methods: ['GET'],
  authLevel: 'function',
  route: 'runs',
  handler: runList,
};

app.http('runList', runListOptions);
