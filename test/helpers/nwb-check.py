"""Check an NWB 2.x file against the parts of the NWB core schema (2.6+) and hdmf-common that are
required for every neurodata_type cortexcast writes, with h5py alone (pynwb is not needed).

The requirements are transcribed from the schema sources (core/nwb.file.yaml, nwb.base.yaml,
nwb.image.yaml, nwb.ophys.yaml, nwb.epoch.yaml, nwb.device.yaml and hdmf-common's table and base
types): required attributes, datasets, groups and links with quantity 1 or '+', dtypes where the
schema fixes them, and the shapes that must agree (timestamps vs data, table columns vs id,
DynamicTableRegion rows vs its table). A type the check does not know is an error, so a writer
cannot slip in an invented neurodata_type.

Usage: nwb-check.py FILE  -> prints 'ok' and exits 0, or prints one problem per line and exits 1.
"""
import datetime
import sys

import h5py
import numpy as np

problems = []


def bad(path, msg):
    problems.append(f'{path}: {msg}')


def text(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        return text(v[()])
    return v if isinstance(v, str) else None


def is_text_dataset(d):
    return d.dtype.kind in ('O', 'S', 'U') or h5py.check_string_dtype(d.dtype) is not None


def isodatetime(path, v):
    s = text(v)
    try:
        datetime.datetime.fromisoformat(s)
    except (TypeError, ValueError):
        bad(path, f'is not an ISO 8601 date-time: {s!r}')


def need_attr(obj, name, kind=None):
    if name not in obj.attrs:
        bad(obj.name, f'missing required attribute {name}')
        return None
    v = obj.attrs[name]
    if kind == 'text' and text(v) is None and not (isinstance(v, np.ndarray) and v.dtype.kind in 'OSU'):
        bad(obj.name, f'attribute {name} must be text')
    if kind == 'number' and not np.issubdtype(np.asarray(v).dtype, np.number):
        bad(obj.name, f'attribute {name} must be numeric')
    return v


def need(group, name, kind):
    """A required member: 'dataset', 'group', or 'link' (a soft link inside the file)."""
    if kind == 'link':
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.SoftLink):
            bad(group.name, f'missing required link {name}')
            return None
        if link.path not in group.file:
            bad(group.name, f'link {name} points to {link.path}, which does not exist')
            return None
        return group.file[link.path]
    obj = group.get(name)
    want = h5py.Dataset if kind == 'dataset' else h5py.Group
    if not isinstance(obj, want):
        bad(group.name, f'missing required {kind} {name}')
        return None
    return obj


def ntype(obj):
    return text(obj.attrs.get('neurodata_type'))


def time_series(g):
    need_attr(g, 'description', 'text') if 'description' in g.attrs else None
    data = need(g, 'data', 'dataset')
    if data is not None:
        need_attr(data, 'unit', 'text')
    n = data.shape[0] if data is not None and data.shape else None
    if 'timestamps' in g:
        ts = g['timestamps']
        need_attr(ts, 'interval', 'number')
        if text(need_attr(ts, 'unit', 'text')) != 'seconds':
            bad(ts.name, "unit must be 'seconds'")
        if ts.dtype != np.float64:
            bad(ts.name, f'must be float64, is {ts.dtype}')
        if n is not None and ts.shape[0] != n:
            bad(ts.name, f'has {ts.shape[0]} values, data has {n}')
    elif 'starting_time' in g:
        st = g['starting_time']
        need_attr(st, 'rate', 'number')
        if text(need_attr(st, 'unit', 'text')) != 'seconds':
            bad(st.name, "unit must be 'seconds'")
    else:
        bad(g.name, 'needs timestamps or starting_time')
    return data


def dynamic_table(g):
    need_attr(g, 'description', 'text')
    cols = need_attr(g, 'colnames')
    ids = need(g, 'id', 'dataset')
    if ids is not None and (ntype(ids) != 'ElementIdentifiers' or not np.issubdtype(ids.dtype, np.integer)):
        bad(ids.name, 'must be an integer ElementIdentifiers dataset')
    rows = ids.shape[0] if ids is not None else None
    for c in ([] if cols is None else list(np.atleast_1d(cols))):
        c = text(c)
        d = need(g, c, 'dataset')
        if d is None:
            continue
        if ntype(d) not in ('VectorData', 'DynamicTableRegion', 'VectorIndex', 'TimeSeriesReferenceVectorData'):
            bad(d.name, f'column has neurodata_type {ntype(d)}, expected VectorData or a subtype')
        need_attr(d, 'description', 'text')
        if rows is not None and d.shape[0] != rows and (c + '_index') not in g:
            bad(d.name, f'has {d.shape[0]} rows, id has {rows}')


def region(d):
    need_attr(d, 'description', 'text')
    ref = need_attr(d, 'table')
    if ref is None:
        return None
    try:
        table = d.file[ref]
    except (ValueError, KeyError, TypeError):
        bad(d.name, 'table attribute is not a valid object reference')
        return None
    rows = table['id'].shape[0] if 'id' in table else 0
    values = d[()]
    if values.size and (values.min() < 0 or values.max() >= rows):
        bad(d.name, f'selects rows outside 0..{rows - 1} of {table.name}')
    return table


def images(g):
    need_attr(g, 'description', 'text')
    imgs = [d for d in g.values() if isinstance(d, h5py.Dataset) and ntype(d) in ('Image', 'GrayscaleImage', 'RGBImage', 'RGBAImage')]
    if not imgs:
        bad(g.name, 'an Images container needs at least one Image')
    if 'order_of_images' in g:
        for r in g['order_of_images'][()]:
            try:
                target = g.file[r]
            except (ValueError, KeyError, TypeError):
                bad(g['order_of_images'].name, 'holds an invalid reference')
                continue
            if ntype(target) not in ('Image', 'GrayscaleImage', 'RGBImage', 'RGBAImage'):
                bad(g['order_of_images'].name, f'refers to {target.name}, not an Image')


def check_group(g):
    t = ntype(g)
    if t in ('TimeSeries', 'RoiResponseSeries', 'ImageSeries', 'IndexSeries'):
        data = time_series(g) if t != 'ImageSeries' or 'external_file' not in g else None
        if t == 'RoiResponseSeries':
            rois = need(g, 'rois', 'dataset')
            if rois is not None:
                if ntype(rois) != 'DynamicTableRegion':
                    bad(rois.name, 'must be a DynamicTableRegion')
                table = region(rois)
                if table is not None and ntype(table) != 'PlaneSegmentation':
                    bad(rois.name, f'refers to a {ntype(table)}, expected a PlaneSegmentation')
                if data is not None and len(data.shape) == 2 and data.shape[1] != rois.shape[0]:
                    bad(g.name, f'data has {data.shape[1]} columns, rois selects {rois.shape[0]}')
        if t == 'IndexSeries':
            if data is not None and data.dtype != np.uint32:
                bad(data.name, f'must be uint32, is {data.dtype}')
            links = [n for n in ('indexed_timeseries', 'indexed_images') if n in g]
            for n in links:
                target = need(g, n, 'link')
                want = 'ImageSeries' if n == 'indexed_timeseries' else 'Images'
                if target is not None and ntype(target) != want:
                    bad(g.name, f'{n} points to a {ntype(target)}, expected {want}')
        if t == 'ImageSeries' and data is not None and len(data.shape) not in (3, 4):
            bad(data.name, f'must be (frame, x, y) or (frame, x, y, z), has shape {data.shape}')
    elif t in ('DynamicTable', 'TimeIntervals', 'PlaneSegmentation'):
        dynamic_table(g)
        if t == 'TimeIntervals':
            for c in ('start_time', 'stop_time'):
                need(g, c, 'dataset')
        if t == 'PlaneSegmentation':
            need(g, 'reference_images', 'group')
            plane = need(g, 'imaging_plane', 'link')
            if plane is not None and ntype(plane) != 'ImagingPlane':
                bad(g.name, 'imaging_plane must link to an ImagingPlane')
    elif t == 'ImagingPlane':
        for d in ('excitation_lambda', 'indicator', 'location'):
            need(g, d, 'dataset')
        if not any(ntype(c) == 'OpticalChannel' for c in g.values() if isinstance(c, h5py.Group)):
            bad(g.name, 'needs at least one OpticalChannel')
        dev = need(g, 'device', 'link')
        if dev is not None and ntype(dev) != 'Device':
            bad(g.name, 'device must link to a Device')
    elif t == 'OpticalChannel':
        need(g, 'description', 'dataset')
        need(g, 'emission_lambda', 'dataset')
    elif t == 'ProcessingModule':
        need_attr(g, 'description', 'text')
    elif t in ('DfOverF', 'Fluorescence'):
        if not any(ntype(c) == 'RoiResponseSeries' for c in g.values() if isinstance(c, h5py.Group)):
            bad(g.name, f'a {t} needs at least one RoiResponseSeries')
    elif t == 'ImageSegmentation':
        if not any(ntype(c) == 'PlaneSegmentation' for c in g.values() if isinstance(c, h5py.Group)):
            bad(g.name, 'an ImageSegmentation needs at least one PlaneSegmentation')
    elif t == 'Images':
        images(g)
    elif t in ('Device', 'LabMetaData', 'NWBFile'):
        pass
    else:
        bad(g.name, f'unknown neurodata_type {t!r}')


def check_dataset(d):
    t = ntype(d)
    if t == 'GrayscaleImage':
        if len(d.shape) != 2:
            bad(d.name, f'a GrayscaleImage is 2-D, has shape {d.shape}')
    elif t in ('VectorData', 'ElementIdentifiers', 'ImageReferences', 'VectorIndex'):
        pass
    elif t == 'DynamicTableRegion':
        region(d)
    else:
        bad(d.name, f'unknown neurodata_type {t!r}')


def main(path):
    f = h5py.File(path, 'r')
    if ntype(f) != 'NWBFile':
        bad('/', 'root neurodata_type must be NWBFile')
    version = text(need_attr(f, 'nwb_version', 'text')) or ''
    try:
        if tuple(int(x) for x in version.split('.')[:2]) < (2, 6):
            bad('/', f'nwb_version {version} is older than 2.6')
    except ValueError:
        bad('/', f'nwb_version {version!r} is not a version number')
    for name in ('identifier', 'session_description'):
        d = need(f, name, 'dataset')
        if d is not None and not is_text_dataset(d):
            bad(d.name, 'must be text')
    for name in ('session_start_time', 'timestamps_reference_time'):
        d = need(f, name, 'dataset')
        if d is not None:
            isodatetime(d.name, d[()])
    d = need(f, 'file_create_date', 'dataset')
    if d is not None:
        if len(d.shape) != 1 or d.shape[0] < 1:
            bad(d.name, 'must be a 1-D list of dates')
        else:
            for v in d[()]:
                isodatetime(d.name, v)
    for g in ('acquisition', 'analysis', 'processing', 'stimulus', 'stimulus/presentation', 'stimulus/templates', 'general'):
        need(f, g, 'group')
    ids = {}

    def visit(name, obj):
        link = obj.parent.get(name.split('/')[-1], getlink=True)
        if isinstance(link, h5py.SoftLink):
            return None
        if 'neurodata_type' not in obj.attrs:
            return None
        for a in ('namespace', 'object_id'):
            need_attr(obj, a, 'text')
        oid = text(obj.attrs.get('object_id'))
        if oid in ids:
            bad(obj.name, f'object_id {oid} repeats that of {ids[oid]}')
        ids[oid] = obj.name
        (check_group if isinstance(obj, h5py.Group) else check_dataset)(obj)
        return None

    for a in ('namespace', 'object_id'):
        need_attr(f, a, 'text')
    f.visititems(visit)
    return problems


if __name__ == '__main__':
    p = main(sys.argv[1])
    print('\n'.join(p) if p else 'ok')
    sys.exit(1 if p else 0)
