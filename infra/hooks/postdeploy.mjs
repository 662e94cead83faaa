// After the code is deployed: Event Grid subscribes only a function that exists, so the export
// account's BlobCreated subscription is created here, not in the first provision. The hook waits
// until the host lists the function (right after a first deploy it may not yet), and provisions
// again with CONNECTOR_CODE_DEPLOYED=true for that one process only — nothing stays in the azd
// environment, so after `azd down` the next `azd up` does the same again. A subscription already
// in place (written after the function app was created) needs nothing.
import { arm, azd, envValue, stop } from './azure.mjs';

const FUNCTION = 'exportBlobDrop';
const siteId = envValue('FUNCTION_APP_ID');
const topicId = envValue('EXPORT_SYSTEM_TOPIC_ID');
const subscriptionName = envValue('EVENT_SUBSCRIPTION_NAME');
if (!siteId || !topicId || !subscriptionName) stop('FUNCTION_APP_ID, EXPORT_SYSTEM_TOPIC_ID or EVENT_SUBSCRIPTION_NAME is missing: run azd provision first.');

const waitMinutes = Number(envValue('FUNCTION_LIST_WAIT_MINUTES') ?? 10);
const deadline = Date.now() + waitMinutes * 60_000;
for (;;) {
  const listed = await arm('GET', `${siteId}/functions?api-version=2024-04-01`);
  const names = listed.status === 200 ? (listed.body.value ?? []).map((f) => String(f.name).split('/').pop()) : [];
  if (names.includes(FUNCTION)) break;
  if (Date.now() > deadline)
    stop(
      `The function app does not list ${FUNCTION} after ${waitMinutes} minutes (it lists: ${names.join(', ') || 'nothing'}). Check the deployment in the portal (Function App > Deployment Center), then run azd deploy again.`,
    );
  console.log(`Waiting for the host to list ${FUNCTION}…`);
  await new Promise((resolve) => setTimeout(resolve, 10_000));
}

const site = await arm('GET', `${siteId}?api-version=2024-04-01`);
const existing = await arm('GET', `${topicId}/eventSubscriptions/${subscriptionName}?api-version=2022-06-15`);
const target = `${siteId}/functions/${FUNCTION}`.toLowerCase();
// A site whose creation time is unknown counts as new: subscribing again is harmless, missing a re-created app is not.
const siteCreated = Date.parse(site.body?.systemData?.createdAt ?? '');
const inPlace =
  existing.status === 200 &&
  !Number.isNaN(siteCreated) &&
  existing.body.properties?.provisioningState === 'Succeeded' &&
  String(existing.body.properties?.destination?.properties?.resourceId ?? '').toLowerCase() === target &&
  Date.parse(existing.body.systemData?.lastModifiedAt ?? '') >= siteCreated;
if (inPlace) {
  console.log(`Event subscription ${subscriptionName} already delivers BlobCreated to ${FUNCTION}.`);
} else {
  console.log(`Subscribing ${FUNCTION} to the export container's BlobCreated events (a short provision)…`);
  // --no-state: azd skips a provision whose template and parameters equal the last one's, which
  // this one may (an earlier postdeploy ran it), while the subscription is gone or failed.
  azd(['provision', '--no-state', '--no-prompt'], { CONNECTOR_CODE_DEPLOYED: 'true' });
}
