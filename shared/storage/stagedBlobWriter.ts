import type { BlockBlobClient } from '@azure/storage-blob';

/**
 * A blob written in blocks of a size the caller chooses, committed at close. Many of them can be
 * open at once (one per shard a partition feeds) without each holding the megabytes an
 * uploadStream buffers. `write` is synchronous; `flushIfFull` is the one await, taken once per
 * batch of rows. Staging a block is idempotent (same id, same bytes), so a retried call after a
 * lost answer does no harm; nothing is visible before commit.
 */
export class StagedBlobWriter {
  private parts: string[] = [];
  private bytes = 0;
  private readonly blockIds: string[] = [];
  lines = 0;

  constructor(
    private readonly blob: BlockBlobClient,
    private readonly blockBytes: number,
  ) {}

  write(line: string): void {
    this.parts.push(line, '\n');
    this.bytes += line.length + 1;
    this.lines += 1;
  }

  get full(): boolean {
    return this.bytes >= this.blockBytes;
  }

  async flushIfFull(): Promise<void> {
    if (this.full) await this.stage();
  }

  private async stage(): Promise<void> {
    if (this.bytes === 0) return;
    const data = Buffer.from(this.parts.join(''), 'utf8');
    this.parts = [];
    this.bytes = 0;
    const id = Buffer.from(String(this.blockIds.length).padStart(8, '0')).toString('base64');
    await this.blob.stageBlock(id, data, data.length);
    this.blockIds.push(id);
  }

  async close(contentType = 'application/x-ndjson'): Promise<void> {
    await this.stage();
    await this.blob.commitBlockList(this.blockIds, { blobHTTPHeaders: { blobContentType: contentType } });
  }
}
