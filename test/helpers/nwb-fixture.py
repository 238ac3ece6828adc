"""An NWB 2.x optical-physiology file written with h5py alone, independently of cortexcast's writer.

It turns a SENSORIUM-layout session into continuous traces: trial t occupies FRAMES_PER_TRIAL
imaging frames starting at frame t * FRAMES_PER_TRIAL; the stimulus is on for WINDOW frames
starting one frame after the onset frame, and those frames hold the trial's response exactly, so
a reader that averages that window recovers the SENSORIUM responses bit for bit. The onset frame
and the last frame of each block hold something else, so a wrong window changes the result.

Layout, following the NWB core schema (nwb.file, nwb.ophys, nwb.image, nwb.epoch, nwb.base) and
hdmf-common: /processing/ophys/DfOverF/RoiResponseSeries (rois -> PlaneSegmentation),
/stimulus/templates/StimulusImages (Images of GrayscaleImage, order_of_images) or an ImageSeries,
/stimulus/presentation/ImageIndex (IndexSeries), /intervals/stimulus_presentations (TimeIntervals
with image_index and tier columns).

--break NAME writes one malformed variant (see BREAKS) for the reader's error tests.
"""
import argparse
import datetime
import os
import uuid

import h5py
import numpy as np

FRAMES_PER_TRIAL = 5
WINDOW = 3
BREAKS = ['no-series', 'two-series', 'no-templates', 'two-templates', 'index-out-of-range', 'no-timing',
          'no-rois', 'not-nwb', 'no-stimulus', 'timestamps-length', 'roi-out-of-range']

STR = h5py.string_dtype('utf-8')


def typed(obj, neurodata_type, namespace='core'):
    obj.attrs['namespace'] = namespace
    obj.attrs['neurodata_type'] = neurodata_type
    obj.attrs['object_id'] = str(uuid.uuid4())
    return obj


def text(group, name, value):
    return group.create_dataset(name, data=value, dtype=STR)


def table(group, name, neurodata_type, description, columns, n, namespace='core'):
    g = typed(group.create_group(name), neurodata_type, namespace)
    g.attrs['description'] = description
    g.attrs.create('colnames', list(columns.keys()), dtype=STR)
    typed(g.create_dataset('id', data=np.arange(n, dtype=np.int64)), 'ElementIdentifiers', 'hdmf-common')
    for col, (data, desc) in columns.items():
        d = g.create_dataset(col, data=data, dtype=STR if data.dtype == object else None)
        typed(d, 'VectorData', 'hdmf-common').attrs['description'] = desc
    return g


def roi_series(f, parent, name, traces, times, rate, plane, timing):
    s = typed(parent.create_group(name), 'RoiResponseSeries')
    s.attrs['description'] = 'dF/F of every ROI'
    s.attrs['comments'] = 'no comments'
    d = s.create_dataset('data', data=traces)
    d.attrs['unit'] = 'n/a'
    d.attrs['conversion'] = np.float32(1.0)
    d.attrs['offset'] = np.float32(0.0)
    d.attrs['resolution'] = np.float32(-1.0)
    if timing == 'timestamps':
        t = s.create_dataset('timestamps', data=times)
        t.attrs['interval'] = np.int32(1)
        t.attrs['unit'] = 'seconds'
    elif timing == 'rate':
        t = s.create_dataset('starting_time', data=np.float64(times[0]))
        t.attrs['rate'] = np.float32(rate)
        t.attrs['unit'] = 'seconds'
    rois = s.create_dataset('rois', data=np.arange(traces.shape[1], dtype=np.int32))
    typed(rois, 'DynamicTableRegion', 'hdmf-common')
    rois.attrs['description'] = 'the ROIs of the traces'
    rois.attrs['table'] = plane.ref
    return s


def write(a):
    root = a.sensorium
    tiers = np.load(os.path.join(root, 'meta/trials/tiers.npy'))
    image_ids = np.load(os.path.join(root, 'meta/trials/frame_image_id.npy'))
    unit_ids = np.load(os.path.join(root, 'meta/neurons/unit_ids.npy'))
    n_trials = len(tiers)
    if a.trials:
        n_trials = min(n_trials, a.trials)
    responses = np.stack([np.load(os.path.join(root, f'data/responses/{i}.npy')).reshape(-1) for i in range(n_trials)]).astype(np.float32)
    units = responses.shape[1]
    # One template per distinct image, in order of first appearance.
    order = []
    for i in range(n_trials):
        if image_ids[i] not in order:
            order.append(image_ids[i])
    template_of = {iid: k for k, iid in enumerate(order)}
    first_trial = {iid: next(i for i in range(n_trials) if image_ids[i] == iid) for iid in order}
    images = [np.load(os.path.join(root, f'data/images/{first_trial[iid]}.npy')).reshape(144, 256) for iid in order]
    if a.template_scale > 1:
        images = [np.repeat(np.repeat(im, a.template_scale, 0), a.template_scale, 1) for im in images]
    if a.template_pad:
        images = [np.pad(im, ((0, 0), (a.template_pad, a.template_pad)), constant_values=255) for im in images]

    rate = a.rate
    frames = n_trials * FRAMES_PER_TRIAL + 2
    traces = np.zeros((frames, units), dtype=np.float32)
    rng = np.random.default_rng(7)
    for t in range(n_trials):
        k = t * FRAMES_PER_TRIAL
        traces[k] = rng.normal(0, 1, units).astype(np.float32)
        traces[k + 1:k + 1 + WINDOW] = responses[t]
        traces[k + 1 + WINDOW:k + FRAMES_PER_TRIAL] = 3 * responses[t] + 1
    times = 2.0 + np.arange(frames, dtype=np.float64) / rate
    onsets = times[np.arange(n_trials) * FRAMES_PER_TRIAL]
    stops = onsets + WINDOW / rate

    with h5py.File(a.out, 'w') as f:
        if a.brk != 'not-nwb':
            typed(f, 'NWBFile')
        f.attrs['nwb_version'] = '2.7.0'
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        f.create_dataset('file_create_date', data=np.array([now], dtype=object), dtype=STR)
        text(f, 'identifier', str(uuid.uuid4()))
        text(f, 'session_description', 'independent fixture for the NWB reader')
        text(f, 'session_start_time', now)
        text(f, 'timestamps_reference_time', now)
        for g in ['acquisition', 'analysis', 'processing', 'stimulus/presentation', 'stimulus/templates', 'general/devices', 'general/optophysiology']:
            f.require_group(g)
        dev = typed(f.create_group('general/devices/Microscope'), 'Device')
        dev.attrs['description'] = 'two-photon microscope'
        plane = typed(f.create_group('general/optophysiology/ImagingPlane'), 'ImagingPlane')
        text(plane, 'description', 'layer 2/3')
        plane.create_dataset('excitation_lambda', data=np.float32(920.0))
        plane.create_dataset('imaging_rate', data=np.float32(rate))
        text(plane, 'indicator', 'GCaMP6s')
        text(plane, 'location', 'V1')
        oc = typed(plane.create_group('OpticalChannel'), 'OpticalChannel')
        text(oc, 'description', 'green')
        oc.create_dataset('emission_lambda', data=np.float32(510.0))
        plane['device'] = h5py.SoftLink('/general/devices/Microscope')

        ophys = typed(f.create_group('processing/ophys'), 'ProcessingModule')
        ophys.attrs['description'] = 'optical physiology'
        seg = typed(ophys.create_group('ImageSegmentation'), 'ImageSegmentation')
        roi_ids = unit_ids.astype(np.int64)
        ps = table(seg, 'PlaneSegmentation', 'PlaneSegmentation', 'ROIs', {}, units)
        ps['id'][...] = roi_ids
        ps.create_group('reference_images')
        ps['imaging_plane'] = h5py.SoftLink('/general/optophysiology/ImagingPlane')
        dff = typed(ophys.create_group('DfOverF'), 'DfOverF')
        if a.brk != 'no-series':
            s = roi_series(f, dff, 'RoiResponseSeries', traces, times, rate, ps, 'none' if a.brk == 'no-timing' else a.timing)
            if a.brk == 'no-rois':
                del s['rois']
            if a.brk == 'roi-out-of-range':
                s['rois'][0] = units + 5
            if a.brk == 'timestamps-length' and 'timestamps' in s:
                del s['timestamps']
                t = s.create_dataset('timestamps', data=times[:-3])
                t.attrs['interval'] = np.int32(1)
                t.attrs['unit'] = 'seconds'
        if a.brk == 'two-series':
            fl = typed(ophys.create_group('Fluorescence'), 'Fluorescence')
            roi_series(f, fl, 'RoiResponseSeries', traces, times, rate, ps, a.timing)

        if a.brk != 'no-templates':
            if a.templates == 'images':
                tpl = typed(f.create_group('stimulus/templates/StimulusImages'), 'Images')
                tpl.attrs['description'] = 'the natural images shown'
                refs = []
                for k, im in enumerate(images):
                    d = typed(tpl.create_dataset(f'image_{k}', data=im.astype(np.uint8)), 'GrayscaleImage')
                    refs.append(d.ref)
                oi = tpl.create_dataset('order_of_images', data=np.array(refs, dtype=h5py.ref_dtype), dtype=h5py.ref_dtype)
                typed(oi, 'ImageReferences')
            else:
                tpl = typed(f.create_group('stimulus/templates/StimulusImages'), 'ImageSeries')
                tpl.attrs['description'] = 'the natural images shown'
                d = tpl.create_dataset('data', data=np.stack(images).astype(np.uint8))
                d.attrs['unit'] = 'n/a'
                st = tpl.create_dataset('starting_time', data=np.float64(0.0))
                st.attrs['rate'] = np.float32(1.0)
                st.attrs['unit'] = 'seconds'
            if a.brk == 'two-templates':
                other = typed(f.create_group('stimulus/templates/Other'), 'Images')
                other.attrs['description'] = 'more images'
                typed(other.create_dataset('image_0', data=images[0].astype(np.uint8)), 'GrayscaleImage')

        index = np.array([template_of[image_ids[i]] for i in range(n_trials)], dtype=np.uint32)
        if a.brk == 'index-out-of-range':
            index[3] = len(images) + 10
        if a.brk != 'no-stimulus' and a.stimulus in ('indexseries', 'both'):
            ix = typed(f.create_group('stimulus/presentation/ImageIndex'), 'IndexSeries')
            ix.attrs['description'] = 'which template was on screen from each onset'
            d = ix.create_dataset('data', data=index)
            d.attrs['unit'] = 'N/A'
            t = ix.create_dataset('timestamps', data=onsets)
            t.attrs['interval'] = np.int32(1)
            t.attrs['unit'] = 'seconds'
            if a.brk not in ('no-templates', 'two-templates'):
                ix['indexed_images' if a.templates == 'images' else 'indexed_timeseries'] = h5py.SoftLink('/stimulus/templates/StimulusImages')
        if a.brk != 'no-stimulus' and a.stimulus in ('intervals', 'both'):
            cols = {
                'start_time': (onsets.astype(np.float64), 'onset'),
                'stop_time': (stops.astype(np.float64), 'offset'),
                'image_index': (index.astype(np.int64), 'index into /stimulus/templates/StimulusImages'),
            }
            if not a.no_tier:
                cols['tier'] = (np.array([str(x) for x in tiers[:n_trials]], dtype=object), 'data split')
            f.require_group('intervals')
            table(f['intervals'], 'stimulus_presentations', 'TimeIntervals', 'images shown', cols, n_trials)


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--sensorium', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--rate', type=float, default=10.0)
    p.add_argument('--trials', type=int, default=0)
    p.add_argument('--timing', choices=['timestamps', 'rate'], default='timestamps')
    p.add_argument('--templates', choices=['images', 'imageseries'], default='images')
    p.add_argument('--template-scale', type=int, default=1)
    p.add_argument('--template-pad', type=int, default=0)
    p.add_argument('--stimulus', choices=['intervals', 'indexseries', 'both'], default='both')
    p.add_argument('--no-tier', action='store_true')
    p.add_argument('--break', dest='brk', choices=BREAKS)
    write(p.parse_args())
