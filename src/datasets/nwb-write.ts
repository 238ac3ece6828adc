import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Dataset, Group, openH5, type File, type Reference } from './hdf5.js';

/**
 * A small NWB 2.x writer on h5wasm: the required root attributes and datasets of an NWBFile, and
 * typed groups and datasets (neurodata_type, namespace, object_id on each) for the types cortexcast
 * writes. Files are written under a temporary name beside the destination, fsynced and renamed,
 * so a reader never sees a half-written file.
 */
export const NWB_VERSION = '2.7.0';

/** Arrays larger than this many values are written in blocks of it. */
const WRITE_BLOCK_VALUES = 4 << 20;

type Numeric = Float32Array | Float64Array | Uint8Array | Uint32Array | Int32Array | BigInt64Array;
type AttrValue = string | number | string[] | Reference;

export interface NwbFileInfo {
  identifier: string;
  sessionDescription: string;
  sessionStartTime: Date;
}

/** ISO 8601 with milliseconds and an explicit UTC offset, as the schema's isodatetime asks. */
export const isoTime = (d: Date): string => d.toISOString().replace('Z', '+00:00');

export class NwbWriter {
  private closed = false;

  private constructor(
    readonly file: File,
    readonly path: string,
    private readonly tmp: string,
  ) {}

  static create(path: string, info: NwbFileInfo): NwbWriter {
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.partial`);
    const w = new NwbWriter(openH5(tmp, 'w'), path, tmp);
    const f = w.file;
    w.typed(f, 'NWBFile');
    f.create_attribute('nwb_version', NWB_VERSION, null, 'S');
    f.create_dataset({ name: 'file_create_date', data: [isoTime(new Date())], dtype: 'S' });
    w.text(f, 'identifier', info.identifier);
    w.text(f, 'session_description', info.sessionDescription);
    w.text(f, 'session_start_time', isoTime(info.sessionStartTime));
    w.text(f, 'timestamps_reference_time', isoTime(info.sessionStartTime));
    for (const g of ['acquisition', 'analysis', 'processing', 'stimulus', 'stimulus/presentation', 'stimulus/templates', 'general']) f.create_group(g);
    return w;
  }

  /** Mark `obj` as a neurodata type of `namespace` with a fresh object id. */
  typed<T extends Group | Dataset>(obj: T, type: string, namespace = 'core'): T {
    obj.create_attribute('namespace', namespace, null, 'S');
    obj.create_attribute('neurodata_type', type, null, 'S');
    obj.create_attribute('object_id', randomUUID(), null, 'S');
    return obj;
  }

  attrs(obj: Group | Dataset, attrs: Record<string, AttrValue | undefined>): void {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined) continue;
      if (typeof v === 'number') obj.create_attribute(k, v, null, Number.isInteger(v) && k === 'interval' ? '<i' : '<f');
      else if (typeof v === 'string' || Array.isArray(v)) obj.create_attribute(k, v, null, 'S');
      else obj.create_attribute(k, v);
    }
  }

  /** The group at `path`, creating missing parents (untyped, like /general/devices). */
  group(path: string, type?: string, attrs: Record<string, AttrValue | undefined> = {}, namespace = 'core'): Group {
    let g: Group = this.file;
    for (const part of path.split('/').filter(Boolean)) {
      const next = g.keys().includes(part) ? g.get(part) : g.create_group(part);
      if (!(next instanceof Group)) throw new Error(`${path}: ${part} is not a group`);
      g = next;
    }
    if (type) this.typed(g, type, namespace);
    this.attrs(g, attrs);
    return g;
  }

  text(parent: Group, name: string, value: string | string[]): Dataset {
    return parent.create_dataset({ name, data: value, dtype: 'S' }) as Dataset;
  }

  data(parent: Group, name: string, data: Numeric | Reference[], shape?: number[], attrs: Record<string, AttrValue | undefined> = {}): Dataset {
    const d = !Array.isArray(data) && !(data instanceof BigInt64Array) && shape && shape.length > 1 && data.length > WRITE_BLOCK_VALUES ? this.blocks(parent, name, data, shape) : (parent.create_dataset({ name, data, ...(shape ? { shape } : {}) }) as Dataset);
    this.attrs(d, attrs);
    return d;
  }

  /** A large array written block by block into a chunked dataset: the WebAssembly heap holds one block, not the array. */
  private blocks(parent: Group, name: string, data: Exclude<Numeric, BigInt64Array>, shape: number[]): Dataset {
    const row = shape.slice(1).reduce((a, b) => a * b, 1);
    const rows = Math.max(1, Math.floor(WRITE_BLOCK_VALUES / row));
    const empty = new (data.constructor as new (n: number) => typeof data)(0);
    const d = parent.create_dataset({ name, data: empty, shape: [0, ...shape.slice(1)], maxshape: [shape[0], ...shape.slice(1)], chunks: [Math.min(rows, shape[0]), ...shape.slice(1)] }) as Dataset;
    d.resize(shape);
    for (let r0 = 0; r0 < shape[0]; r0 += rows) {
      const r1 = Math.min(shape[0], r0 + rows);
      d.write_slice([[r0, r1]], data.subarray(r0 * row, r1 * row));
    }
    return d;
  }

  scalar(parent: Group, name: string, value: number, dtype: '<f' | '<d' = '<d', attrs: Record<string, AttrValue | undefined> = {}): Dataset {
    const d = parent.create_dataset({ name, data: dtype === '<f' ? Float32Array.of(value) : Float64Array.of(value), shape: [] }) as Dataset;
    this.attrs(d, attrs);
    return d;
  }

  link(parent: Group, name: string, target: string): void {
    parent.create_soft_link(target, name);
  }

  /**
   * A TimeSeries (or subtype) at `path`: data with its unit, and timestamps (seconds) or a starting
   * time and rate. `extra` adds the subtype's own attributes.
   */
  timeSeries(
    path: string,
    type: string,
    o: { data: Numeric; shape: number[]; unit: string; timestamps?: Float64Array; startingTime?: number; rate?: number; description: string; comments?: string; conversion?: number },
  ): Group {
    const g = this.group(path, type, { description: o.description, comments: o.comments ?? 'no comments' });
    this.data(g, 'data', o.data, o.shape, { unit: o.unit, conversion: o.conversion ?? 1, offset: 0, resolution: -1 });
    if (o.timestamps) this.data(g, 'timestamps', o.timestamps, undefined, { interval: 1, unit: 'seconds' });
    else this.scalar(g, 'starting_time', o.startingTime ?? 0, '<d', { rate: o.rate!, unit: 'seconds' });
    return g;
  }

  /** An Images container of GrayscaleImage datasets (image_0, image_1, ...) with order_of_images. */
  images(path: string, images: { pixels: Uint8Array; height: number; width: number }[], description: string): Group {
    const g = this.group(path, 'Images', { description });
    const refs = images.map((im, i) => {
      const d = this.typed(this.data(g, `image_${i}`, im.pixels, [im.height, im.width]), 'GrayscaleImage');
      return d.create_reference();
    });
    this.typed(this.data(g, 'order_of_images', refs), 'ImageReferences');
    return g;
  }

  /**
   * A DynamicTable (or subtype such as TimeIntervals, PlaneSegmentation): an `id` column and one
   * VectorData per column, listed in colnames.
   */
  table(path: string, type: string, description: string, rows: number, columns: { name: string; data: Numeric | string[]; description: string; shape?: number[] }[], ids?: BigInt64Array): Group {
    const g = this.group(path, type, { description });
    g.create_attribute('colnames', columns.map((c) => c.name), null, 'S');
    this.typed(this.data(g, 'id', ids ?? BigInt64Array.from({ length: rows }, (_, i) => BigInt(i))), 'ElementIdentifiers', 'hdmf-common');
    for (const c of columns) {
      const d = Array.isArray(c.data) ? this.text(g, c.name, c.data) : this.data(g, c.name, c.data, c.shape);
      this.typed(d, 'VectorData', 'hdmf-common');
      this.attrs(d, { description: c.description });
    }
    return g;
  }

  /** A DynamicTableRegion dataset: rows of `table`. */
  region(parent: Group, name: string, rows: Int32Array, table: Group, description: string): Dataset {
    const d = this.typed(this.data(parent, name, rows), 'DynamicTableRegion', 'hdmf-common');
    this.attrs(d, { description, table: table.create_reference() });
    return d;
  }

  /** Close, fsync and rename into place. */
  close(): string {
    if (this.closed) return this.path;
    this.closed = true;
    this.file.close();
    const fd = openSync(this.tmp, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(this.tmp, this.path);
    const dir = openSync(dirname(this.path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    return this.path;
  }

  /** Drop the temporary file (after a failure). */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.file.close();
    } finally {
      rmSync(this.tmp, { force: true });
    }
  }
}
