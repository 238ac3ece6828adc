import { existsSync } from 'node:fs';
import { ccError } from '../common/errors.js';
import { attrNumber, attrReference, Dataset, Group, Reference, groupsBelow, isHdf5, neurodataType, numbers, numericValues, openH5, texts, type File } from './hdf5.js';
import type { ContinuousRecording, Presentation, StimulusTemplate } from './recording.js';
import { fitTemplate } from './template-geometry.js';

/**
 * Neurodata Without Borders (NWB 2.x) optical physiology into a ContinuousRecording: the traces of one
 * RoiResponseSeries with their clock and ROI ids, the stimulus presentations (a TimeIntervals table
 * with an image column, or an IndexSeries) and the images they index. Whatever is missing or
 * ambiguous is a coded error naming the path inside the file and what was expected there.
 */
export interface NwbReadOptions {
  /** Path of the RoiResponseSeries inside the file (needed when the file holds several). */
  series?: string;
  /** Path of the presentations: a TimeIntervals table or an IndexSeries. */
  stimulus?: string;
  /** Path of the stimulus templates: an Images container or an ImageSeries. */
  templates?: string;
  /**
   * Bring each template to this [height, width] as it is read (fitTemplate: centre crop, area resize),
   * so large screen images are never all held at full size; templates keep their own size without it.
   */
  templateShape?: readonly [number, number];
}

export interface NwbRecording extends ContinuousRecording {
  file: string;
  seriesPath: string;
  stimulusPath: string;
  templatesPath: string;
}

/** Columns of a TimeIntervals table read as the index of the image shown, first match wins. */
export const IMAGE_COLUMNS = ['image_index', 'template_index', 'stimulus_index', 'image', 'frame'] as const;
const SERIES_FLAG = '--nwb-series <path>';
const STIMULUS_FLAG = '--nwb-stimulus <path>';
const TEMPLATES_FLAG = '--nwb-templates <path>';
/** Rows of traces read at once: bounds the WebAssembly heap whatever the file's size. */
const CHUNK_VALUES = 4 << 20;

export function readNwbRecording(file: string, o: NwbReadOptions = {}): NwbRecording {
  if (!existsSync(file)) throw ccError('CC_ERR_NWB_FORMAT', file, 'no such file');
  if (!isHdf5(file)) throw ccError('CC_ERR_NWB_FORMAT', file, 'not a readable HDF5 file (no HDF5 signature)');
  let f: File;
  try {
    f = openH5(file, 'r');
  } catch (e) {
    throw ccError('CC_ERR_NWB_FORMAT', file, `not a readable HDF5 file (${(e as Error).message})`);
  }
  try {
    const rootType = neurodataType(f);
    if (rootType !== 'NWBFile') throw ccError('CC_ERR_NWB_FORMAT', file, `the root group's neurodata_type is '${rootType}', expected 'NWBFile' (an NWB 2.x file)`);
    // Everything small is read and checked first, so a malformed file fails before its traces are read.
    const series = findSeries(f, file, o.series);
    const { data, frames, units } = traceShape(series, file);
    const { frameTimes, rate } = readClock(series, file, frames);
    const unitIds = readRoiIds(f, series, file, units);
    const stim = findStimulus(f, file, o.stimulus);
    const tpl = findTemplates(f, file, stim, o.templates);
    const templates = readTemplates(f, tpl, file, o.templateShape);
    const presentations = neurodataType(stim) === 'TimeIntervals' ? readIntervals(stim, file, templates.length, tpl.path) : readIndexSeries(stim, file, templates.length, tpl.path);
    const traces = readTraces(data, frames, units, file);
    return { file, seriesPath: series.path, stimulusPath: stim.path, templatesPath: tpl.path, traces, frames, units, unitIds, frameTimes, rate, presentations, templates };
  } finally {
    f.close();
  }
}

function child(g: Group, name: string): Group | Dataset | undefined {
  if (!g.keys().includes(name)) return undefined;
  const c = g.get(name);
  return c instanceof Group || c instanceof Dataset ? c : undefined;
}

function typedGroups(f: File, roots: string[], types: string[]): Group[] {
  const out: Group[] = [];
  for (const r of roots) {
    const g = f.keys().includes(r.slice(1)) ? f.get(r) : null;
    if (g instanceof Group) for (const c of groupsBelow(g)) if (types.includes(neurodataType(c))) out.push(c);
  }
  return out;
}

function groupAt(f: File, file: string, path: string, what: string): Group {
  const g = f.get(path);
  if (!(g instanceof Group)) throw ccError('CC_ERR_NWB_MISSING', file, path, what);
  return g;
}

function findSeries(f: File, file: string, path?: string): Group {
  if (path) {
    const g = groupAt(f, file, path, `a RoiResponseSeries (${SERIES_FLAG})`);
    if (neurodataType(g) !== 'RoiResponseSeries') throw ccError('CC_ERR_NWB_FORMAT', file, `${path} is a '${neurodataType(g)}', expected a RoiResponseSeries`);
    return g;
  }
  const found = typedGroups(f, ['/processing', '/acquisition'], ['RoiResponseSeries']);
  if (!found.length) throw ccError('CC_ERR_NWB_MISSING', file, 'a RoiResponseSeries', 'one in /processing/<module>/DfOverF or Fluorescence, or in /acquisition');
  if (found.length > 1) throw ccError('CC_ERR_NWB_AMBIGUOUS', file, `${found.length} RoiResponseSeries (${found.map((g) => g.path).join(', ')})`, SERIES_FLAG);
  return found[0];
}

function traceShape(series: Group, file: string): { data: Dataset; frames: number; units: number } {
  const data = child(series, 'data');
  if (!(data instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `${series.path}/data`, 'the traces, frames x ROIs');
  const shape = data.shape ?? [];
  if (shape.length < 1 || shape.length > 2 || shape[0] < 1) throw ccError('CC_ERR_NWB_SHAPE', file, `${data.path} has shape (${shape}), expected (frames, ROIs)`);
  return { data, frames: shape[0], units: shape[1] ?? 1 };
}

function readTraces(data: Dataset, frames: number, units: number, file: string): Float32Array {
  const shape = data.shape ?? [];
  const traces = new Float32Array(frames * units);
  const rows = Math.max(1, Math.floor(CHUNK_VALUES / units));
  for (let r0 = 0; r0 < frames; r0 += rows) {
    const r1 = Math.min(frames, r0 + rows);
    const part = data.slice(shape.length === 2 ? [[r0, r1], []] : [[r0, r1]]);
    if (!ArrayBuffer.isView(part)) throw ccError('CC_ERR_NWB_SHAPE', file, `${data.path} is not numeric`);
    const src = part as unknown as ArrayLike<number | bigint>;
    if (src instanceof Float32Array || src instanceof Float64Array || typeof src[0] === 'number') traces.set(src as ArrayLike<number>, r0 * units);
    else for (let i = 0; i < src.length; i++) traces[r0 * units + i] = Number(src[i]);
  }
  // NWB stores values in acquisition units; conversion and offset give them in `unit`.
  const conversion = attrNumber(data, 'conversion') ?? 1;
  const offset = attrNumber(data, 'offset') ?? 0;
  if (conversion !== 1 || offset !== 0) for (let i = 0; i < traces.length; i++) traces[i] = traces[i] * conversion + offset;
  return traces;
}

/** Times of a TimeSeries' samples: its timestamps, or starting_time and its rate. */
function seriesTimes(series: Group, file: string, count: number): { times: Float64Array; rate?: number } {
  const ts = child(series, 'timestamps');
  if (ts instanceof Dataset) {
    const times = numbers(ts);
    if (times.length !== count) throw ccError('CC_ERR_NWB_SHAPE', file, `${ts.path} has ${times.length} values, ${series.path}/data has ${count} samples`);
    for (let i = 1; i < times.length; i++)
      if (!(times[i] >= times[i - 1])) throw ccError('CC_ERR_NWB_SHAPE', file, `${ts.path} decreases at sample ${i} (${times[i - 1]} then ${times[i]}); timestamps must be non-decreasing`);
    return { times };
  }
  const st = child(series, 'starting_time');
  const rate = st instanceof Dataset ? attrNumber(st, 'rate') : undefined;
  if (!(st instanceof Dataset) || rate === undefined || !(rate > 0)) throw ccError('CC_ERR_NWB_TIMING', file, series.path, 'timestamps (one per sample) or starting_time with a positive rate attribute');
  const t0 = numbers(st)[0];
  return { times: Float64Array.from({ length: count }, (_, i) => t0 + i / rate), rate };
}

function readClock(series: Group, file: string, frames: number): { frameTimes: Float64Array; rate: number } {
  const { times, rate } = seriesTimes(series, file, frames);
  if (rate) return { frameTimes: times, rate };
  const gaps = Array.from({ length: Math.min(frames - 1, 10_000) }, (_, i) => times[i + 1] - times[i]).sort((a, b) => a - b);
  const median = gaps[gaps.length >> 1];
  if (!(median > 0)) throw ccError('CC_ERR_NWB_SHAPE', file, `${series.path}/timestamps give no positive frame interval`);
  // Rounded to a millionth of a hertz: float timestamps give 30.000000000002 for a 30 Hz clock.
  return { frameTimes: times, rate: Math.round(1e6 / median) / 1e6 };
}

function readRoiIds(f: File, series: Group, file: string, units: number): number[] {
  const rois = child(series, 'rois');
  if (!(rois instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `${series.path}/rois`, 'a DynamicTableRegion into the ROI table (PlaneSegmentation)');
  const ref = attrReference(rois, 'table');
  const table = ref ? f.dereference(ref) : null;
  if (!(table instanceof Group)) throw ccError('CC_ERR_NWB_MISSING', file, `the table attribute of ${rois.path}`, 'an object reference to the ROI table (PlaneSegmentation)');
  const idDs = child(table, 'id');
  if (!(idDs instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `${table.path}/id`, "the ROI table's ids");
  const ids = numbers(idDs);
  const rows = numbers(rois);
  if (rows.length !== units) throw ccError('CC_ERR_NWB_SHAPE', file, `${rois.path} selects ${rows.length} ROIs, ${series.path}/data has ${units} columns`);
  return Array.from(rows, (r, j) => {
    if (!Number.isInteger(r) || r < 0 || r >= ids.length) throw ccError('CC_ERR_NWB_INDEX', file, `${rois.path}[${j}] is ${r}, ${table.path} has ${ids.length} rows (0..${ids.length - 1})`);
    return ids[r];
  });
}

const imageColumn = (g: Group): string | undefined => IMAGE_COLUMNS.find((c) => g.keys().includes(c));

function findStimulus(f: File, file: string, path?: string): Group {
  if (path) {
    const g = groupAt(f, file, path, `a TimeIntervals table or an IndexSeries (${STIMULUS_FLAG})`);
    const t = neurodataType(g);
    if (t === 'IndexSeries') return g;
    if (t === 'TimeIntervals' && imageColumn(g)) return g;
    throw ccError('CC_ERR_NWB_FORMAT', file, `${path} is a '${t}'${t === 'TimeIntervals' ? ' without an image column' : ''}, expected a TimeIntervals table with one of the columns ${IMAGE_COLUMNS.join(', ')}, or an IndexSeries`);
  }
  // A table carries stop times and tiers; an IndexSeries only onsets, so a table is preferred.
  const tables = typedGroups(f, ['/intervals'], ['TimeIntervals']).filter((g) => imageColumn(g));
  if (tables.length > 1) throw ccError('CC_ERR_NWB_AMBIGUOUS', file, `${tables.length} TimeIntervals tables with an image column (${tables.map((g) => g.path).join(', ')})`, STIMULUS_FLAG);
  if (tables.length) return tables[0];
  const series = typedGroups(f, ['/stimulus'], ['IndexSeries']);
  if (series.length > 1) throw ccError('CC_ERR_NWB_AMBIGUOUS', file, `${series.length} IndexSeries (${series.map((g) => g.path).join(', ')})`, STIMULUS_FLAG);
  if (series.length) return series[0];
  throw ccError('CC_ERR_NWB_MISSING', file, 'the stimulus presentations', `a TimeIntervals table in /intervals with start_time, stop_time and an image column (${IMAGE_COLUMNS.join(', ')}), or an IndexSeries in /stimulus/presentation`);
}

function findTemplates(f: File, file: string, stim: Group, path?: string): Group {
  const kinds = ['Images', 'ImageSeries', 'OpticalSeries'];
  if (path) {
    const g = groupAt(f, file, path, `an Images container or an ImageSeries (${TEMPLATES_FLAG})`);
    if (!kinds.includes(neurodataType(g))) throw ccError('CC_ERR_NWB_FORMAT', file, `${path} is a '${neurodataType(g)}', expected an Images container or an ImageSeries`);
    return g;
  }
  // An IndexSeries names its images; a table's column indexes the one template container there is.
  const linking = neurodataType(stim) === 'IndexSeries' ? [stim] : typedGroups(f, ['/stimulus'], ['IndexSeries']);
  for (const s of linking)
    for (const name of ['indexed_images', 'indexed_timeseries']) {
      const g = child(s, name);
      // Reported under the path it is stored at, not the link's.
      if (g instanceof Group) {
        const target = s.get_link(g.path);
        const stored = typeof target === 'string' && target.startsWith('/') ? f.get(target) : null;
        return stored instanceof Group ? stored : g;
      }
    }
  const found = typedGroups(f, ['/stimulus'], kinds).filter((g) => g.path.startsWith('/stimulus/templates/'));
  if (!found.length) throw ccError('CC_ERR_NWB_MISSING', file, '/stimulus/templates', 'an Images container of GrayscaleImage datasets or an ImageSeries holding the images shown');
  if (found.length > 1) throw ccError('CC_ERR_NWB_AMBIGUOUS', file, `${found.length} stimulus template containers (${found.map((g) => g.path).join(', ')})`, TEMPLATES_FLAG);
  return found[0];
}

/** Grey levels of one image (H x W, or H x W x RGB[A] reduced by luminance); 0..1 floats become 0..255. */
function greyImage(values: ArrayLike<number>, shape: number[], file: string, where: string): { image: Float32Array; height: number; width: number } {
  if (shape.length < 2 || shape.length > 3 || (shape.length === 3 && shape[2] !== 3 && shape[2] !== 4))
    throw ccError('CC_ERR_NWB_SHAPE', file, `${where} has shape (${shape}), expected (height, width) or (height, width, 3|4)`);
  const [height, width] = shape;
  const ch = shape[2] ?? 1;
  const image = new Float32Array(height * width);
  for (let i = 0; i < image.length; i++)
    image[i] = ch === 1 ? values[i] : 0.299 * values[i * ch] + 0.587 * values[i * ch + 1] + 0.114 * values[i * ch + 2];
  return { image, height, width };
}

function scaleUnitRange(images: StimulusTemplate[], floats: boolean): void {
  if (!floats) return;
  let hi = -Infinity;
  for (const t of images) for (const v of t.image) hi = Math.max(hi, v);
  if (hi <= 1) for (const t of images) for (let i = 0; i < t.image.length; i++) t.image[i] *= 255;
}

const subView = (a: ArrayLike<number>, from: number, to: number): ArrayLike<number> => (ArrayBuffer.isView(a) ? (a as unknown as Float32Array).subarray(from, to) : Array.prototype.slice.call(a, from, to));
const refKey = (r: Reference): string => Buffer.from(r.ref_data).toString('hex');
const isFloat = (d: Dataset): boolean => typeof d.dtype === 'string' && /^[<>=|]?f/.test(d.dtype);
const naturalOrder = (a: string, b: string): number => a.localeCompare(b, 'en', { numeric: true });

function readTemplates(f: File, tpl: Group, file: string, shape?: readonly [number, number]): StimulusTemplate[] {
  const out: StimulusTemplate[] = [];
  let floats = false;
  const fitted = (t: StimulusTemplate): StimulusTemplate => (shape ? { image: fitTemplate(t, shape[0], shape[1]), height: shape[0], width: shape[1], imageId: t.imageId } : t);
  if (neurodataType(tpl) === 'Images') {
    // order_of_images fixes what an index means; without it, images in natural name order.
    const order = child(tpl, 'order_of_images');
    let datasets: Dataset[];
    if (order instanceof Dataset) {
      const refs = order.value;
      // Matching the container's own references first: dereferencing costs milliseconds per image.
      const own = new Map<string, Dataset>();
      for (const k of tpl.keys()) {
        const d = tpl.get(k);
        if (d instanceof Dataset && k !== 'order_of_images') own.set(refKey(d.create_reference()), d);
      }
      datasets = (Array.isArray(refs) ? refs : [refs]).map((r, i) => {
        const d = (r instanceof Reference && own.get(refKey(r))) || f.dereference(r as never);
        if (!(d instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `the image ${order.path}[${i}] refers to`, 'an Image dataset');
        return d;
      });
    } else datasets = tpl.keys().sort(naturalOrder).map((k) => tpl.get(k)).filter((d): d is Dataset => d instanceof Dataset);
    if (!datasets.length) throw ccError('CC_ERR_NWB_MISSING', file, `images in ${tpl.path}`, 'GrayscaleImage (or RGBImage) datasets');
    datasets.forEach((d, i) => {
      floats ||= isFloat(d);
      out.push(fitted({ ...greyImage(numericValues(d), d.shape ?? [], file, d.path), imageId: i }));
    });
  } else {
    const data = child(tpl, 'data');
    if (!(data instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `${tpl.path}/data`, 'the template images stored in the file (external_file is not read)');
    const dims = data.shape ?? [];
    floats = isFloat(data);
    const values = numericValues(data);
    const per = dims.slice(1).reduce((a, b) => a * b, 1);
    for (let i = 0; i < (dims[0] ?? 0); i++) out.push(fitted({ ...greyImage(subView(values, i * per, (i + 1) * per), dims.slice(1), file, `${data.path}[${i}]`), imageId: i }));
    if (!out.length) throw ccError('CC_ERR_NWB_MISSING', file, `images in ${data.path}`, 'at least one frame');
  }
  scaleUnitRange(out, floats);
  return out;
}

function checkedIndex(v: number, count: number, file: string, where: string, tplPath: string): number {
  if (!Number.isInteger(v) || v >= count) throw ccError('CC_ERR_NWB_INDEX', file, `${where} is ${v}, the templates at ${tplPath} hold ${count} images (indices 0..${count - 1})`);
  return v;
}

function readIntervals(table: Group, file: string, count: number, tplPath: string): Presentation[] {
  const column = (name: string, what: string): Dataset => {
    const d = child(table, name);
    if (!(d instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `${table.path}/${name}`, what);
    return d;
  };
  const start = numbers(column('start_time', 'the onset of each presentation (seconds)'));
  const stop = numbers(column('stop_time', 'the end of each presentation (seconds)'));
  const col = imageColumn(table)!;
  const index = numbers(column(col, 'the index of the image shown'));
  const tierDs = child(table, 'tier');
  const tiers = tierDs instanceof Dataset ? texts(tierDs) : undefined;
  for (const [name, a] of [['stop_time', stop], [col, index], ['tier', tiers]] as const)
    if (a && a.length !== start.length) throw ccError('CC_ERR_NWB_SHAPE', file, `${table.path}/${name} has ${a.length} rows, ${table.path}/start_time has ${start.length}`);
  const out: Presentation[] = [];
  for (let i = 0; i < start.length; i++) {
    // A negative index is a blank (grey) interval, as in stimulus tables that mark them with -1.
    if (index[i] < 0) continue;
    const template = checkedIndex(index[i], count, file, `${table.path}/${col}[${i}]`, tplPath);
    out.push({ start: start[i], stop: stop[i], template, ...(tiers ? { tier: tiers[i] } : {}) });
  }
  return out.sort((a, b) => a.start - b.start);
}

function readIndexSeries(series: Group, file: string, count: number, tplPath: string): Presentation[] {
  const data = child(series, 'data');
  if (!(data instanceof Dataset)) throw ccError('CC_ERR_NWB_MISSING', file, `${series.path}/data`, 'the index of the template shown at each onset');
  const index = numbers(data);
  const { times } = seriesTimes(series, file, index.length);
  // An IndexSeries has onsets only: each image lasts until the next onset (the last one the median interval).
  const gaps = Array.from({ length: times.length - 1 }, (_, i) => times[i + 1] - times[i]).sort((a, b) => a - b);
  const last = gaps.length ? gaps[gaps.length >> 1] : 0;
  const out: Presentation[] = [];
  for (let i = 0; i < index.length; i++) {
    if (index[i] < 0) continue;
    out.push({ start: times[i], stop: i + 1 < times.length ? times[i + 1] : times[i] + last, template: checkedIndex(index[i], count, file, `${data.path}[${i}]`, tplPath) });
  }
  return out;
}

