/**
 * Queue names are fixed: the Functions host binds triggers to them by name, and the poison queue is
 * always `<queue>-poison`.
 */
export const BATCH_QUEUE = 'braze-batches';
export const RUN_QUEUE = 'export-runs';
