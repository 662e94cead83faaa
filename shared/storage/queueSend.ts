import type { QueueClient } from '@azure/storage-queue';

/** Azure Storage refuses a visibility timeout beyond seven days. */
const MAX_VISIBILITY_SECONDS = 7 * 24 * 3600;

/**
 * Every message the connector sends: no expiry (the default time-to-live is seven days, after which
 * a batch waiting behind a long outage would vanish), and a delay clamped to what the queue allows.
 */
export async function sendToQueue(queue: QueueClient, text: string, delayMs = 0): Promise<void> {
  const visibilityTimeout = Math.min(MAX_VISIBILITY_SECONDS, Math.max(0, Math.ceil(delayMs / 1000)));
  await queue.sendMessage(text, { messageTimeToLive: -1, visibilityTimeout });
}
