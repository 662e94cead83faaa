import type { BlockBlobClient } from '@azure/storage-blob';

/** Where a writer's buffer starts: small partitions (most of them) never need more. */
const INITIAL_BUFFER_BYTES = 64 * 1024;
/** What a batch of rows usually adds to one shard's block after it filled, before the flush. */
const BATCH_SLACK_BYTES = 64 * 1024;

/**
 * A blob written in blocks of a size the caller chooses, committed at close. Many of them can be
 * open at once (one per shard a partition feeds) without each holding the megabytes an
 * uploadStream buffers. `write` is synchronous; `flushIfFull` is the one await, taken once per
 * batch of rows. Staging a block is idempotent (same id, same bytes), so a retried call after a
 * lost answer does no harm; nothing is visible before commit.
 *
 * Each line is encoded into the block's buffer as it is written, and the buffer is reused once
 * its block is staged: a line's string dies young. Kept as strings until the block filled, lines
 * outlived the young generation and were copied into the old one, whose garbage then set a map
 * step's peak memory.
 */
export class StagedBlobWriter {
  private buffer = Buffer.allocUnsafe(INITIAL_BUFFER_BYTES);
  private bytes = 0;
  private readonly blockIds: string[] = [];
  lines = 0;

  constructor(
    private readonly blob: BlockBlobClient,
    private readonly blockBytes: number,
  ) {}

  write(line: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit: room for that, so nothing is ever cut short.
    const room = line.length * 3 + 1;
    if (this.bytes + room > this.buffer.length) this.grow(this.bytes + room);
    this.bytes += this.buffer.write(line, this.bytes, 'utf8');
    this.buffer[this.bytes++] = 10;
    this.lines += 1;
  }

  get full(): boolean {
    return this.bytes >= this.blockBytes;
  }

  async flushIfFull(): Promise<void> {
    if (this.full) await this.stage();
  }

  /** A block and what a batch of rows usually adds past it: the buffer's size once it is reused, block after block. */
  private get reusedBytes(): number {
    return this.blockBytes + BATCH_SLACK_BYTES;
  }

  private grow(needed: number): void {
    // Doubling, so a batch that runs far past its block (one shard takes every row) copies little.
    const size = this.buffer.length < this.reusedBytes ? Math.min(this.buffer.length * 2, this.reusedBytes) : this.buffer.length * 2;
    const grown = Buffer.allocUnsafe(Math.max(needed, size));
    this.buffer.copy(grown, 0, 0, this.bytes);
    this.buffer = grown;
  }

  private async stage(): Promise<void> {
    if (this.bytes === 0) return;
    const data = this.buffer.subarray(0, this.bytes);
    const id = Buffer.from(String(this.blockIds.length).padStart(8, '0')).toString('base64');
    // The buffer is written again only after the block is staged (the request is done with it).
    await this.blob.stageBlock(id, data, data.length);
    this.bytes = 0;
    // A buffer a long batch grew is not kept for the blocks after it.
    if (this.buffer.length > 2 * this.reusedBytes) this.buffer = Buffer.allocUnsafe(this.reusedBytes);
    this.blockIds.push(id);
  }

  async close(contentType = 'application/x-ndjson'): Promise<void> {
    await this.stage();
    await this.blob.commitBlockList(this.blockIds, { blobHTTPHeaders: { blobContentType: contentType } });
  }
}
