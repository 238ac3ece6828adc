"""A synthetic NWB optical-physiology file of a given size, for `npm run bench:nwb` (h5py alone).

Random float32 dF/F traces (frames x ROIs) in /processing/ophys/DfOverF/RoiResponseSeries with
timestamps, a PlaneSegmentation of the ROIs, random uint8 template images in an Images container,
and a TimeIntervals table of presentations (stimulus seconds on, grey seconds off, random images).

Usage: synthetic-session.py OUT FRAMES ROIS RATE IMAGES IMAGE_H IMAGE_W STIMULUS_S GREY_S contiguous|gzip
"""
import sys, uuid, datetime, h5py, numpy as np
out, frames, rois, rate, n_images, img_h, img_w, stim_s, grey_s, compress = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9]), sys.argv[10] == 'gzip'
STR = h5py.string_dtype('utf-8')
rng = np.random.default_rng(1)
def typed(o, t, ns='core'):
    o.attrs['namespace'] = ns; o.attrs['neurodata_type'] = t; o.attrs['object_id'] = str(uuid.uuid4()); return o
with h5py.File(out, 'w') as f:
    typed(f, 'NWBFile'); f.attrs['nwb_version'] = '2.7.0'
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    f.create_dataset('file_create_date', data=np.array([now], dtype=object), dtype=STR)
    for k, v in [('identifier', str(uuid.uuid4())), ('session_description', 'measurement'), ('session_start_time', now), ('timestamps_reference_time', now)]:
        f.create_dataset(k, data=v, dtype=STR)
    for g in ['acquisition', 'analysis', 'stimulus/presentation', 'stimulus/templates', 'general']: f.require_group(g)
    oph = typed(f.create_group('processing/ophys'), 'ProcessingModule'); oph.attrs['description'] = 'ophys'
    ps = typed(oph.create_group('ImageSegmentation/PlaneSegmentation'), 'PlaneSegmentation')
    ps.attrs['description'] = 'rois'; ps.attrs.create('colnames', [], dtype=STR)
    typed(ps.create_dataset('id', data=np.arange(rois, dtype=np.int64) + 1000), 'ElementIdentifiers', 'hdmf-common')
    s = typed(oph.create_group('DfOverF/RoiResponseSeries'), 'RoiResponseSeries')
    kw = dict(chunks=(min(frames, max(1, 2**20 // rois)), rois), compression='gzip', compression_opts=4) if compress else {}
    d = s.create_dataset('data', shape=(frames, rois), dtype='f4', **kw)
    block = max(1, 2**24 // rois)
    for r0 in range(0, frames, block):
        r1 = min(frames, r0 + block)
        d[r0:r1] = rng.standard_normal((r1 - r0, rois), dtype=np.float32)
    d.attrs['unit'] = 'n/a'
    t = s.create_dataset('timestamps', data=np.arange(frames) / rate); t.attrs['unit'] = 'seconds'; t.attrs['interval'] = np.int32(1)
    rr = typed(s.create_dataset('rois', data=np.arange(rois, dtype=np.int32)), 'DynamicTableRegion', 'hdmf-common'); rr.attrs['table'] = ps.ref; rr.attrs['description'] = 'rois'
    tpl = typed(f.create_group('stimulus/templates/Images'), 'Images'); tpl.attrs['description'] = 'images'
    refs = []
    for k in range(n_images):
        refs.append(typed(tpl.create_dataset(f'image_{k}', data=rng.integers(0, 256, (img_h, img_w), dtype=np.uint8)), 'GrayscaleImage').ref)
    tpl.create_dataset('order_of_images', data=np.array(refs, dtype=h5py.ref_dtype), dtype=h5py.ref_dtype)
    period = stim_s + grey_s
    onsets = np.arange(1.0, frames / rate - 2, period)
    idx = rng.integers(0, n_images, len(onsets))
    it = typed(f.create_group('intervals/stimulus_presentations'), 'TimeIntervals'); it.attrs['description'] = 'shown'
    it.attrs.create('colnames', ['start_time', 'stop_time', 'image_index'], dtype=STR)
    typed(it.create_dataset('id', data=np.arange(len(onsets), dtype=np.int64)), 'ElementIdentifiers', 'hdmf-common')
    for name, v in [('start_time', onsets), ('stop_time', onsets + stim_s), ('image_index', idx.astype(np.int64))]:
        typed(it.create_dataset(name, data=v), 'VectorData', 'hdmf-common').attrs['description'] = name
    print(out, frames, rois, len(onsets), 'presentations', n_images, 'images')
