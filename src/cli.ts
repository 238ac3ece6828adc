import { Command, InvalidArgumentError, Option } from 'commander';

import { parseDuration } from './common/duration.js';
import { join, resolve } from 'node:path';
import { ccError, CortexcastError } from './common/errors.js';
import { clientToken } from './common/token-file.js';
import { VERSION } from './common/version.js';
import type { ServerConfigInput } from './server/config.js';
// Commands load their modules when they run: `serve` never pays for image decoding or training code.

/** '90s', '30m', '2h', '1h30m' or plain seconds -> seconds. */
const duration = (name: string) => (v: string): number => {
  const s = parseDuration(v);
  if (Number.isNaN(s)) throw new InvalidArgumentError(`${name} must be a duration such as 90s, 30m, 2h or 1h30m`);
  return s;
};

const int = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return n;
};
const count = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a whole number (0 or more)`);
  return n;
};

const positive = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number`);
  return n;
};

const nonNegative = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number, 0 or more`);
  return n;
};

const fraction = (name: string) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`${name} must be a number from 0 to 1`);
  return n;
};

export const program = new Command('cortexcast')
  .version(VERSION)
  .description('Decode images from mouse V1 activity: simulate or read recordings, train decoders, evaluate and serve them.')
  .showHelpAfterError()
  // How an NWB file given as --data (to any command) or to `import nwb` is read; see docs/guides/nwb.md.
  .option('--nwb-series <path>', 'NWB: the RoiResponseSeries to read (needed when the file holds several)')
  .option('--nwb-stimulus <path>', 'NWB: the presentations, a TimeIntervals table or an IndexSeries (needed when several)')
  .option('--nwb-templates <path>', 'NWB: the stimulus templates, an Images container or an ImageSeries (needed when several)')
  .option('--window-frames <n>', 'NWB: imaging frames averaged per response (default: the median presentation)', int('window-frames'))
  .option('--lag-frames <n>', 'NWB: frames from the onset frame to the first averaged one (default: max(1, round(0.05 s x rate)))', count('lag-frames'))
  .option('--baseline-frames <n>', 'NWB: subtract the mean of this many frames before each onset (default 0: none)', count('baseline-frames'))
  .hook('preAction', async (_program, action) => {
    // NWB support (HDF5 in WebAssembly) is loaded only for commands that name an .nwb file.
    const named = [...action.args, ...Object.values(action.opts()).flat()].some((a) => typeof a === 'string' && /\.nwb$/i.test(a));
    if (!named) return;
    const { configureNwbReading, loadNwbSupport } = await import('./datasets/dataset-source.js');
    await loadNwbSupport();
    const o = program.opts();
    configureNwbReading({ series: o.nwbSeries, stimulus: o.nwbStimulus, templates: o.nwbTemplates, lengthFrames: o.windowFrames, lagFrames: o.lagFrames, baselineFrames: o.baselineFrames });
  });

program
  .command('synth')
  .description('write a simulated V1 recording in the SENSORIUM 2022 layout')
  .addOption(new Option('--preset <name>', 'dataset size').choices(['default', 'small', 'tiny']).default('default'))
  .option('--small', 'same as --preset small (tests, quick demos)')
  .option('--tiny', 'same as --preset tiny (unit tests)')
  .option('--out <dir>', 'output folder (default data/synth-<preset>)')
  .option('--neurons <n>', 'number of model neurons', int('neurons'))
  .option('--train <n>', 'train trials', int('train'))
  .option('--validation <n>', 'validation trials', int('validation'))
  .option('--test-images <n>', 'test images', int('test-images'))
  .option('--repeats <n>', 'repeats per test image', int('repeats'))
  .option('--seed <n>', 'random seed', int('seed'))
  .option('--complex-fraction <x>', 'fraction of complex (energy) cells, the rest simple (default 0.6)', fraction('complex-fraction'))
  .option('--rf-sigma <px>', 'median receptive-field size, Gaussian sigma in simulation pixels (default 2.6)', positive('rf-sigma'))
  .addOption(new Option('--split <how>', "how tiers are kept apart: 'photos' (validation and test crops from photos of their own) or 'regions' (every photo feeds every tier, from quadrants separated by a guard band)").choices(['photos', 'regions']).default('photos'))
  .option('--noise-free', "responses without trial-to-trial noise (each neuron's expected response): the ceiling of what is decodable")
  .option('--nwb <file>', 'write continuous two-photon traces as an NWB file instead (calcium transients, noise, drift; see docs/guides/nwb.md)')
  .option('--rate <hz>', 'with --nwb: imaging rate (default 30)', positive('rate'))
  .option('--grey <seconds>', 'with --nwb: grey between stimuli, min,max seconds (default 0.3,0.5; 0,0 = back to back)')
  .option('--force', 'overwrite a non-empty output folder')
  .action(async (o) => {
    const { synthesize, SYNTH_PRESETS } = await import('./training/data/synth.js');
    const preset = o.tiny ? 'tiny' : o.small ? 'small' : (o.preset as 'default' | 'small' | 'tiny');
    const base = SYNTH_PRESETS[preset];
    const cfg = {
      ...base,
      trainTrials: o.train ?? base.trainTrials,
      validationTrials: o.validation ?? base.validationTrials,
      testImages: o.testImages ?? base.testImages,
      repeats: o.repeats ?? base.repeats,
      simulator: {
        ...base.simulator,
        neurons: o.neurons ?? base.simulator.neurons,
        seed: o.seed ?? base.simulator.seed,
        complexFraction: o.complexFraction ?? base.simulator.complexFraction,
        rfSigmaMedian: o.rfSigma ?? base.simulator.rfSigmaMedian,
      },
    };
    if (o.nwb) {
      const { synthesizeContinuous, DEFAULT_CONTINUOUS } = await import('./training/data/continuous-sim.js');
      const grey = o.grey ? String(o.grey).split(',').map(Number) : DEFAULT_CONTINUOUS.greySeconds;
      if (grey.length !== 2 || grey.some((g) => !Number.isFinite(g) || g < 0) || grey[1] < grey[0]) throw ccError('CC_ERR_OPTION', '--grey must be min,max seconds, 0 <= min <= max');
      const r = await synthesizeContinuous(resolve(o.nwb), cfg, { ...DEFAULT_CONTINUOUS, rate: o.rate ?? DEFAULT_CONTINUOUS.rate, greySeconds: [grey[0], grey[1]] }, { force: o.force });
      console.log(`wrote ${r.frames} frames x ${r.rois} ROIs (${r.presentations} presentations) to ${r.file} in ${r.seconds.toFixed(1)} s`);
      return;
    }
    const out = resolve(o.out ?? join('data', `synth-${preset}`));
    const r = await synthesize(out, { ...cfg, split: o.split as 'photos' | 'regions', noiseFree: Boolean(o.noiseFree) }, { force: o.force });
    console.log(`wrote ${r.trials} trials x ${r.neurons} neurons to ${r.dir} in ${r.seconds.toFixed(1)} s`);
  });

program
  .command('import')
  .description('convert a recording into a dataset folder')
  .command('nwb <file>')
  .description('an NWB 2.x optical-physiology file -> the SENSORIUM 2022 layout: trials cut from the traces by the response window (see the NWB options of `cortexcast --help`)')
  .requiredOption('--out <dir>', 'dataset folder to write')
  .option('--force', 'overwrite a non-empty output folder')
  .action(async (file: string, o) => {
    const { importNwb } = await import('./datasets/nwb-import.js');
    const g = program.opts();
    const r = importNwb(file, resolve(o.out), { series: g.nwbSeries, stimulus: g.nwbStimulus, templates: g.nwbTemplates, lengthFrames: g.windowFrames, lagFrames: g.lagFrames, baselineFrames: g.baselineFrames, force: o.force });
    console.log(`wrote ${r.trials} trials x ${r.neurons} ROIs to ${r.dir} (${Object.entries(r.tiers).map(([t, n]) => `${t} ${n}`).join(', ')})`);
    console.log(`read ${r.source.seriesPath} (${r.source.frames} frames at ${r.source.rateHz.toFixed(2)} Hz), presentations ${r.source.stimulusPath}, templates ${r.source.templatesPath}`);
    console.log(`response window: ${r.window.lengthFrames} frames from lag ${r.window.lagFrames} (${r.source.windowRule}); baseline ${r.source.baselineFrames} frames; tiers: ${r.source.tierRule}${r.source.dropped ? `; ${r.source.dropped} presentations dropped (window outside the recording)` : ''}`);
  });

program
  .command('inspect')
  .description('stimulus sheet (PNG) and response statistics (SVG) of a dataset')
  .requiredOption('--data <dir>', 'dataset folder (SENSORIUM layout)')
  .option('--out <dir>', 'where to write the figures (default <data>/inspect; for an .nwb file <file>-inspect beside it)')
  .action(async (o) => {
    const { inspectDataset } = await import('./training/eval/inspect.js');
    // An NWB file is a file, not a folder: its figures go beside it.
    const s = inspectDataset(o.data, o.out ?? (/\.nwb$/i.test(o.data) ? o.data.replace(/\.nwb$/i, '-inspect') : join(o.data, 'inspect')));
    console.log(JSON.stringify(s, null, 2));
  });

const train = program.command('train').description('train a decoder and write its bundle');
train
  .command('ridge')
  .description('closed-form ridge regression, regularisation chosen on the validation tier')
  .requiredOption('--data <dir>', 'dataset folder')
  .requiredOption('--out <dir>', 'bundle folder to write')
  .addOption(new Option('--scaling <kind>', 'response std scaling').choices(['brainreader', 'sensorium']).default('brainreader'))
  .addOption(new Option('--image-size <hxw>', 'decoded image size').choices(['36x64', '64x64']).default('36x64'))
  .option('--alphas <list>', 'comma-separated regularisation multiples to try')
  .action(async (o) => {
    const { trainRidge } = await import('./training/ridge/train-ridge.js');
    const [h, w] = (o.imageSize as string).split('x').map(Number);
    const r = await trainRidge({
      data: o.data,
      out: o.out,
      preprocess: { imageSize: [h, w], responseScaling: o.scaling },
      alphas: o.alphas ? String(o.alphas).split(',').map(Number) : undefined,
    });
    console.log(`bundle ${o.out}: ${r.manifest.name}, fit ${r.fitSeconds.toFixed(1)} s, total ${r.seconds.toFixed(1)} s`);
    console.log(`validation ${JSON.stringify(r.manifest.metrics.validation)}`);
  });

train
  .command('refiner')
  .description("cortexcast's CNN refiner trained across animals on their ridge images: `calibrate --refiner` serves it on a new animal's ridge")
  .requiredOption('--data <dirs...>', 'dataset folders, one per animal')
  .requiredOption('--out <dir>', 'refiner folder to write')
  .option('--steps <n>', 'training steps at most', int('--steps'), 2000)
  .option('--budget <duration>', 'wall-clock budget, e.g. 5m', duration('--budget'))
  .addOption(new Option('--image-size <hxw>', 'decoded image size').choices(['36x64', '64x64']).default('36x64'))
  .action(async (o) => {
    const { trainRefinerAcrossAnimals } = await import('./training/calibrate/train-refiner.js');
    const { saveRefiner } = await import('./training/calibrate/refiner.js');
    const [h, w] = (o.imageSize as string).split('x').map(Number);
    const r = await trainRefinerAcrossAnimals({ data: o.data, steps: o.steps, budgetSeconds: o.budget, imageSize: [h, w], log: (m) => process.stderr.write(m + '\n') });
    saveRefiner(o.out, r);
    console.log(`refiner ${o.out}: ${r.steps} steps on ${r.animals.join(', ')}`);
  });

train
  .command('encoder')
  .description('encoding model (image -> responses): CNN core + Gaussian readout, Poisson loss; writes an encoder bundle')
  .requiredOption('--data <dirs...>', 'dataset folder(s): several sessions share the core, one readout each')
  .requiredOption('--out <dir>', 'bundle folder (one sub-folder per session when there are several)')
  .addOption(new Option('--profile <name>', 'core size').choices(['small', 'paper']).default('small'))
  .addOption(new Option('--readout <kind>', 'readout').choices(['gaussian', 'factorized']).default('gaussian'))
  .option('--plain', 'plain k7 convolutions instead of depth-separable ones')
  .option('--epochs <n>', 'maximum epochs', int('epochs'), 30)
  .option('--batch <n>', 'images per session per step', int('batch'), 32)
  .option('--lr <x>', 'Adam learning rate', Number, 5e-3)
  .option('--patience <n>', 'early stopping: epochs without a better validation correlation', int('patience'), 5)
  .option('--max-train <n>', 'use only the first n train trials', int('max-train'))
  .option('--run <dir>', 'run folder: config, metrics.csv/json, curves.svg, checkpoint, stop.json (default <out>/run)')
  .option('--max-steps <n>', 'stop after n steps', int('max-steps'))
  .option('--budget <time>', 'wall-clock budget, e.g. 90s, 30m, 2h (none by default): stop when it is spent, keep the best validated bundle, say so in the run folder', duration('budget'))
  .option('--resume', "continue from the run folder's checkpoint")
  .option('--seed <n>', 'random seed', int('seed'), 1)
  .action(async (o) => {
    const { trainEncoder } = await import('./training/encoder/train-encoder.js');
    const r = await trainEncoder({
      data: o.data,
      out: o.out,
      profile: o.profile,
      config: { readout: o.readout, ...(o.plain ? { separable: false } : {}) },
      epochs: o.epochs,
      batch: o.batch,
      lr: o.lr,
      patience: o.patience,
      maxTrain: o.maxTrain,
      run: o.run,
      maxSteps: o.maxSteps,
      budgetSeconds: o.budget,
      resume: o.resume,
      seed: o.seed,
    });
    for (const s of r.sessions) console.log(`bundle ${s.dir}: ${s.manifest.name} ${JSON.stringify(s.scores)}`);
    console.log(`${r.epochs} epochs in ${r.seconds.toFixed(1)} s`);
  });

train
  .command('autoencoder')
  .description('image autoencoder for the latent decoders, trained on images alone: a 4x8x8 VAE at 64x64 (--space vae) or a decoder of MobileNetV2 features (--space features)')
  .requiredOption('--data <dirs...>', "dataset folder(s) whose train-tier stimuli it learns; the first one's validation tier is the held-out score")
  .requiredOption('--out <dir>', 'autoencoder folder to write (autoencoder.json, encoder.onnx, decoder.onnx, reconstructions.png)')
  .addOption(new Option('--space <kind>', 'latent space').choices(['vae', 'features']).default('vae'))
  .addOption(new Option('--profile <name>', 'network size (realtime: --space vae only, decoder widths 8/16/32 so that latent-vae serves 16 streams on 2 cores)').choices(['small', 'paper', 'realtime']).default('small'))
  .option('--layer <name>', "--space features: the network layer (default: the best of the layer table, by response prediction on validation)")
  .option('--photo-crops <n>', 'random crops of the npm photos no given dataset validates or tests on', count('photo-crops'))
  .option('--kl-weight <x>', 'VAE: weight of the KL term against the per-pixel MSE (default 1e-4)', nonNegative('kl-weight'))
  .option('--batch <n>', 'images per step', int('batch'))
  .option('--lr <x>', 'AdamW learning rate', positive('lr'))
  .option('--epochs <n>', 'maximum epochs', int('epochs'))
  .option('--validate-every <n>', 'validate every n steps (default 200)', int('validate-every'))
  .option('--patience <n>', 'stop after n validations without a better held-out MSE (default 8)', int('patience'))
  .option('--run <dir>', 'run folder (default <out>/run)')
  .option('--max-steps <n>', 'stop after n steps', int('max-steps'))
  .option('--budget <time>', 'wall-clock budget, e.g. 90s, 30m, 2h (none by default)', duration('budget'))
  .option('--resume', "continue from the run folder's checkpoint")
  .option('--seed <n>', 'random seed', int('seed'), 1)
  .action(async (o) => {
    const common = {
      data: o.data as string[],
      out: o.out as string,
      run: o.run,
      profile: o.profile,
      photoCrops: o.photoCrops,
      batch: o.batch,
      lr: o.lr,
      epochs: o.epochs,
      validateEvery: o.validateEvery,
      patience: o.patience,
      maxSteps: o.maxSteps,
      budgetSeconds: o.budget,
      resume: o.resume,
      seed: o.seed,
    };
    if (o.space === 'features') {
      const { trainFeatureDecoder } = await import('./training/latent/train-feature-decoder.js');
      await trainFeatureDecoder({ ...common, layer: o.layer });
    } else {
      const { trainAutoencoder } = await import('./training/latent/train-autoencoder.js');
      await trainAutoencoder({ ...common, klWeight: o.klWeight });
    }
  });

train
  .command('latent')
  .description("latent-space decoder: a readin from responses to an autoencoder's latent, chained with its frozen decoder into one bundle")
  .requiredOption('--autoencoder <dir>', 'autoencoder folder (cortexcast train autoencoder)')
  .requiredOption('--data <dir>', 'dataset folder')
  .requiredOption('--out <dir>', 'bundle folder (with --finetune the frozen-decoder bundle goes to <out>/frozen)')
  .addOption(new Option('--profile <name>', "readin size (paper: the report's n-4096-2048-1024-256 MLP / 128-channel conv readin)").choices(['small', 'paper']).default('small'))
  .option('--finetune', 'then train readin and decoder end to end on the images (beyond the report)')
  .option('--finetune-lr <x>', 'fine-tuning learning rate (default 2e-5)', positive('finetune-lr'))
  .option('--cycle <encoder>', 'fine-tuning: add a cycle-consistency term through this encoder bundle (encoder(decoded) close to the responses)')
  .option('--cycle-weight <x>', 'weight of the cycle term (default 0.1)', positive('cycle-weight'))
  .option('--batch <n>', 'trials per step (default 64)', int('batch'))
  .option('--lr <x>', 'readin AdamW learning rate (default 1e-4)', positive('lr'))
  .option('--weight-decay <x>', 'AdamW weight decay (default 1e-4)', nonNegative('weight-decay'))
  .option('--epochs <n>', 'maximum epochs', int('epochs'))
  .option('--validate-every <n>', 'validate every n steps (default 100)', int('validate-every'))
  .option('--patience <n>', 'stop after n validations without a better SSIML (default 6)', int('patience'))
  .option('--max-train <n>', 'use only the first n train trials', int('max-train'))
  .option('--max-steps <n>', 'stop each stage after n steps', int('max-steps'))
  .option('--budget <time>', 'wall-clock budget of the invocation, e.g. 90s, 30m, 2h (none by default); with --finetune the readin gets 60%', duration('budget'))
  .option('--resume', "continue from the run folders' checkpoints")
  .option('--seed <n>', 'random seed', int('seed'), 1)
  .action(async (o) => {
    const { trainLatent } = await import('./training/latent/train-latent.js');
    const r = await trainLatent({
      autoencoder: o.autoencoder,
      data: o.data,
      out: o.out,
      profile: o.profile,
      finetune: o.finetune,
      finetuneLr: o.finetuneLr,
      cycleEncoder: o.cycle,
      cycleWeight: o.cycleWeight,
      batch: o.batch,
      lr: o.lr,
      weightDecay: o.weightDecay,
      epochs: o.epochs,
      validateEvery: o.validateEvery,
      patience: o.patience,
      maxTrain: o.maxTrain,
      maxSteps: o.maxSteps,
      budgetSeconds: o.budget,
      resume: o.resume,
      seed: o.seed,
    });
    const row = (m: { metrics: { test?: Record<string, number> } }): string => ['ssiml', 'mse', 'fid'].map((k) => `${k.toUpperCase()} ${m.metrics.test?.[k]?.toFixed(3)}`).join(' ');
    console.log(`frozen decoder  ${r.frozen.bundle}: test ${row(r.frozen.manifest)}`);
    if (r.finetuned) console.log(`fine-tuned      ${r.finetuned.bundle}: test ${row(r.finetuned.manifest)}`);
  });

for (const kind of ['cnn', 'gan'] as const) {
  const cmd = train
    .command(kind)
    .description(
      kind === 'cnn'
        ? "CNN decoder. Default (--recipe cortexcast): the ridge image refined by a small U-Net that also sees a ridge estimate of local contrast, MSE + log-SSIM, best checkpoint by validation SSIML. --recipe report: the report's FC readin + transposed-conv core, MSE, best epoch by validation FID"
        : "GAN decoder: MEI readin + stride-1 core, LSGAN + log-SSIM, best epoch by validation FID. Default (--recipe cortexcast): the core refines the ridge image; --recipe report: the report's GAN alone",
    )
    .requiredOption('--data <dirs...>', kind === 'gan' ? 'dataset folder(s); several train B-All (one readin and discriminator head each, shared core)' : 'dataset folder(s); several (cortexcast recipe) train one refiner shared by all animals, each read in by its own ridge')
    .requiredOption('--out <dir>', 'bundle folder to write (one sub-folder per session for B-All; the run folder goes to <out>/run unless --run)')
    .option('--run <dir>', 'run folder: config, metrics.csv/json, curves.svg, validation grid, checkpoint')
    .addOption(
      new Option('--profile <name>', "sizes: paper (the authors' code; expect a GPU), appendix (CNN only: the report's appendix), small (2 CPU cores), realtime (GAN only: the readin on a 4x coarser grid, a 16-channel core; decode cost near the CNN's)")
        .choices(kind === 'cnn' ? ['small', 'paper', 'appendix'] : ['small', 'paper', 'realtime'])
        .default('small'),
    )
    .option('--epochs <n>', "maximum epochs (the report's 200). On a CPU that is hours: after its first steps the run prints how long the epochs would take at the measured step time; --budget or --max-steps bound it", int('epochs'), 200)
    .option('--batch <n>', 'batch size', int('batch'), 16)
    .option('--lr <x>', `AdamW learning rate (default ${kind === 'cnn' ? "5e-5; the report's 3e-4 with --recipe report" : "3e-4, the report's"})`, Number)
    .option('--weight-decay <x>', 'AdamW weight decay', Number, 3e-2)
    .option('--validate-every <n>', `validate every n steps (default: ${kind === 'cnn' ? '50; every epoch with --recipe report' : 'every epoch'})`, int('validate-every'))
    .option('--max-steps <n>', 'stop after n steps', int('max-steps'))
    .option('--budget <time>', 'wall-clock budget, e.g. 90s, 30m, 2h (none by default): stop when it is spent, keep the best validated bundle, say so in the run folder', duration('budget'))
    .option('--max-train <n>', 'use only the first n train trials', int('max-train'))
    .option('--resume', 'continue from the run folder\'s checkpoint')
    .option('--encoder-pairs <dir>', 'encoder bundle of the same session: mix encoder-labelled new images (crops and flips of train stimuli) into every batch')
    .option('--pairs-fraction <x>', 'fraction of each batch made of encoder pairs', Number, 0.5)
    .option('--response-noise <sd>', "noise augmentation: Gaussian noise of this sd (in each neuron's response std) added to the train responses at every step (fed ridge images move by its read-out); 0: off", Number, 0)
    .addOption(
      new Option('--recipe <name>', kind === 'cnn' ? "cortexcast: ridge image + a small convolutional correction of it (measured in docs/results.md); report: the report's FC-readin CNN" : "cortexcast: ridge-anchored (the core refines the ridge image); report: the report's GAN alone")
        .choices(['cortexcast', 'report'])
        .default('cortexcast'),
    )
    .addOption(new Option('--select <metric>', `validation metric that picks the exported checkpoint (default: ${kind === 'cnn' ? 'ssiml; fid with --recipe report' : 'fid'})`).choices(['fid', 'ssiml', 'mse']))
    .option('--patience <n>', `stop after n validations without a better --select metric (default: ${kind === 'cnn' ? '6; none with --recipe report' : 'none, the run goes on to --epochs'})`, int('patience'))
    .addOption(new Option('--anchor <kind>', "ridge: learn a correction on top of the closed-form ridge fit (step 0 is ridge); none: the decoder alone (default: the recipe's)").choices(['ridge', 'none']))
    .addOption(new Option('--refiner-levels <n>', 'cortexcast CNN: 2 = U-Net (whole-image receptive field), 0 = three full-resolution convolutions').choices(['0', '2']))
    .option('--anchor-folds <k>', `train on k-fold out-of-fold ridge images (folds keep a source photo together); 0 trains on the in-sample ridge image (default ${kind === 'cnn' ? '5 for the cortexcast recipe, else 0' : '0'})`, count('anchor-folds'))
    .option('--seed <n>', 'random seed', int('seed'), 1);
  if (kind === 'cnn')
    cmd
      .addOption(new Option('--loss <name>', 'training objective (--recipe report: mse unless given)').choices(['mse', 'logssim', 'mae', 'mse+logssim']).default('mse+logssim'))
      .option('--anchor-contrast', "cortexcast recipe (default on): the refiner also sees a second ridge's estimate of the stimulus' local contrast (on a coarser grid, see --contrast-downsample)")
      .option('--no-anchor-contrast', 'the refiner sees the ridge image alone')
      .option('--contrast-downsample <f>', "the contrast read-out's grid is the image's divided by f, upsampled bilinearly in the graph (default 4: 1/16 of the full-size read-out's weights, same validation quality; 1: full size)", int('contrast-downsample'));
  if (kind === 'gan')
    cmd
      .option('--meis <dirs...>', 'MEI folder(s) from cortexcast meis (MEI readin), one per --data, same order')
      .addOption(new Option('--loss <name>', 'reconstruction term of the generator loss').choices(['logssim', 'mse', 'mae']).default('logssim'))
      .addOption(new Option('--readin <kind>', "readin: mei (grid network x MEIs), grid (grid network alone, on the --meis folder's neurons), fc").choices(['mei', 'grid', 'fc']).default('mei'))
      .option('--transform', 'ablation T: log10(clamp(r, 1e-3)) on responses')
      .option('--coordinates', 'ablation C: neuron coordinates into the context MLP');
  cmd.action(async (o) => {
    const { trainDecoder } = await import('./training/decoders/train-decoder.js');
    const r = await trainDecoder({
      kind,
      data: o.data.length === 1 ? o.data[0] : o.data,
      out: o.out,
      run: o.run,
      profile: o.profile,
      epochs: o.epochs,
      batch: o.batch,
      lr: o.lr,
      weightDecay: o.weightDecay,
      validateEvery: o.validateEvery,
      maxSteps: o.maxSteps,
      budgetSeconds: o.budget,
      maxTrain: o.maxTrain,
      resume: o.resume,
      seed: o.seed,
      meis: o.meis,
      // The CNN's shown default is its default recipe's; the report's recipe has its own unless --loss is given.
      loss: kind === 'cnn' && o.recipe === 'report' && cmd.getOptionValueSource('loss') === 'default' ? undefined : o.loss,
      readin: o.readin,
      transform: o.transform,
      coordinates: o.coordinates,
      recipe: o.recipe,
      anchor: o.anchor,
      anchorFolds: o.anchorFolds,
      refinerLevels: o.refinerLevels === undefined ? undefined : (Number(o.refinerLevels) as 0 | 2),
      anchorContrast: o.anchorContrast,
      contrastDownsample: o.contrastDownsample,
      select: o.select,
      patience: o.patience,
      encoderPairs: o.encoderPairs,
      pairsFraction: o.pairsFraction,
      responseNoise: o.responseNoise,
    });
    console.log(`bundle${r.bundles.length > 1 ? 's' : ''} ${r.bundles.join(', ')}: ${r.manifest.name}, best epoch ${r.best.epoch} (validation FID ${r.best.fid.toFixed(3)}), ${r.steps} steps in ${r.seconds.toFixed(0)} s; run folder ${r.run}`);
    for (const m of r.manifests) console.log(`test ${m.name}: ${JSON.stringify(m.metrics.test)}`);
  });
}

train
  .command('invenc')
  .description('inverted-encoder decoder: searches steps / step size / blur on validation FID; writes an iterative bundle')
  .requiredOption('--encoder <dir>', 'encoder bundle (cortexcast train encoder)')
  .requiredOption('--out <dir>', 'bundle folder to write')
  .option('--data <dir>', "dataset for the search (default: the encoder's)")
  .addOption(new Option('--grid <name>', "search space: paper (the report's grid; hours on a CPU: the search prints its expected duration after the first setting) or quick").choices(['quick', 'paper']).default('quick'))
  .option('--search-images <n>', 'validation images scored in the search', int('search-images'), 40)
  .action(async (o) => {
    const { trainInvenc, INVENC_GRIDS } = await import('./training/encoder/train-invenc.js');
    const r = await trainInvenc({ encoder: o.encoder, out: o.out, data: o.data, grid: INVENC_GRIDS[o.grid as 'quick' | 'paper'], searchImages: o.searchImages });
    console.log(`bundle ${o.out}: ${r.manifest.name}, steps ${r.best.steps}, lr ${r.best.lr}, blur sigma ${r.best.blurSigma}; validation FID ${r.best.fid.toFixed(3)} SSIM ${r.best.ssim.toFixed(3)}; ${r.seconds.toFixed(1)} s`);
  });

program
  .command('meis')
  .description('most exciting inputs of every neuron by gradient ascent through an encoder bundle (resumable)')
  .requiredOption('--encoder <dir>', 'encoder bundle')
  .requiredOption('--out <dir>', 'output folder (meis.npy, unit_ids.npy, meis.json, meis.png)')
  .option('--steps <n>', "gradient-ascent steps (the report's 1000)", int('steps'), 1000)
  .option('--lr <x>', 'step size', Number, 1)
  .option('--blur <sigma>', 'gradient blur sigma', Number, 1)
  .option('--batch <n>', 'neurons optimised together', int('batch'), 64)
  .option('--neurons <spec>', "which neurons: 'all', 'first:N', or 'top:N' (best validation correlation of the encoder)", 'all')
  .action(async (o) => {
    const { generateMeis, selectNeurons } = await import('./training/encoder/meis.js');
    const r = await generateMeis({ encoder: o.encoder, out: o.out, steps: o.steps, lr: o.lr, blurSigma: o.blur, batch: o.batch, neurons: selectNeurons(o.encoder, o.neurons) });
    console.log(`${r.neurons.length} MEIs in ${o.out} (${r.seconds.toFixed(1)} s)${r.rfCorrelation ? `; MEI/RF correlation ${r.rfCorrelation.all.toFixed(3)}` : ''}`);
  });

program
  .command('eval')
  .description("evaluate a bundle: the report's Table I columns (SSIML, MSE, FID) plus SSIM, PixCorr, two-way identification (InceptionV3 features, with FID) and scores per stimulus source")
  .requiredOption('--model <dir>', 'bundle folder')
  .requiredOption('--data <dir>', 'dataset folder')
  .option('--tier <tier>', 'tier to evaluate', 'test')
  .addOption(new Option('--fid <features>', 'FID feature layer (0 = skip)').choices(['0', '64', '2048']).default('64'))
  .option('--grid <file>', 'reconstruction grid PNG (default <model>/eval-<tier>.png)')
  .option('--json', 'print metrics as JSON')
  .option('--single-trials', "test tier: decode every repeat on its own (as live frames arrive) instead of the report's repeat-averaged responses; not saved in the manifest")
  .option('--no-save', 'do not record the metrics in the bundle manifest')
  .action(async (o) => {
    const { evaluateBundle } = await import('./training/eval/evaluate.js');
    const { reconstructionGrid, writeFile } = await import('./training/report/figures.js');
    const { updateBundleMetrics } = await import('./models/bundle.js');
    const fid = Number(o.fid) as 0 | 64 | 2048;
    const r = await evaluateBundle(o.model, o.data, { tier: o.tier, fid, singleTrials: o.singleTrials });
    const grid = o.grid ?? join(o.model, `eval-${o.tier}${o.singleTrials ? '-single-trials' : ''}.png`);
    writeFile(grid, reconstructionGrid([{ label: 'stimulus', images: r.targets }, { label: r.bundle.manifest.name, images: r.recon }], r.count, r.h, r.w));
    if (o.save && !o.singleTrials) updateBundleMetrics(o.model, { [o.tier === 'test' ? 'test' : 'validation']: { ...r.metrics } });
    if (o.json) console.log(JSON.stringify({ model: r.bundle.manifest.name, tier: r.tier, ...r.metrics, bySource: r.bySource, grid }));
    else {
      const m = r.metrics;
      console.log(`${r.bundle.manifest.name} on ${r.tier} (${m.images} images${r.tier === 'test' ? (o.singleTrials ? ', single trials' : ', repeats averaged') : ''})`);
      console.log('  SSIML    MSE     FID' + (fid ? `-${fid}` : '') + '     SSIM    PixCorr  2-way ident (low / high)');
      console.log(`  ${m.ssiml.toFixed(3)}    ${m.mse.toFixed(3)}   ${m.fid === undefined ? '  -   ' : m.fid.toFixed(3).padStart(6)}     ${m.ssim.toFixed(3)}   ${m.pixcorr.toFixed(3)}    ${m.identLow === undefined ? '-' : `${m.identLow.toFixed(3)} / ${m.identHigh!.toFixed(3)}`}`);
      if (r.bySource && r.bySource.length > 1) {
        console.log('  per stimulus source: source, images, SSIML, MSE, PixCorr');
        for (const s of r.bySource) console.log(`    ${s.source.padEnd(26)} ${String(s.images).padStart(4)}  ${s.ssiml.toFixed(3)}  ${s.mse.toFixed(3)}  ${s.pixcorr.toFixed(3)}`);
      }
      console.log(`  grid: ${grid} (top: stimulus, bottom: reconstruction)`);
    }
  });

const exportCmd = program.command('export').description('export a bundle for another serving engine');
exportCmd
  .command('triton')
  .description('write a Triton model repository entry: REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx (std scaling folded into the graph)')
  .requiredOption('--model <dir>', 'decoder bundle folder')
  .requiredOption('--out <repo>', 'model repository folder (created if missing)')
  .option('--name <name>', 'model name in the repository (default: the bundle name)')
  .option('--max-batch <n>', 'max_batch_size', int('max-batch'), 64)
  .option('--queue-delay-us <n>', 'dynamic batching max_queue_delay_microseconds', Number, 100)
  .option('--instances <list>', 'instance groups kind:count, kind gpu|cpu|auto (a GPU group needs a GPU on the Triton host)', 'gpu:1,cpu:1')
  .action(async (o) => {
    const { exportTriton, parseInstances } = await import('./models/export-triton.js');
    const r = exportTriton(o.model, o.out, { name: o.name, maxBatch: o.maxBatch, queueDelayUs: o.queueDelayUs, instances: parseInstances(o.instances) });
    console.log(`wrote ${r.dir}/config.pbtxt and ${r.dir}/1/model.onnx (model '${r.name}': input responses, outputs image and pixels)`);
  });

program
  .command('compare')
  .description("Table I for several bundles side by side (SSIML, MSE, FID, SSIM, PixCorr, CPU latency) and a Figure 5-style grid")
  .requiredOption('--model <dirs...>', 'bundle folders (ridge, invenc, cnn, gan, ...)')
  .requiredOption('--data <dir>', 'dataset folder (its test tier is used)')
  .option('--figure <file>', 'reconstruction figure PNG (default compare.png beside the first bundle)')
  .option('--images <n>', 'test images in the figure', int('images'), 10)
  .option('--json', 'print the rows as JSON')
  .action(async (o) => {
    const { compareBundles } = await import('./training/eval/compare.js');
    const r = await compareBundles(o.model, o.data, { figure: o.figure, images: o.images });
    if (o.json) console.log(JSON.stringify(r.rows, null, 1));
    else console.log(r.table);
    console.log(`figure: ${r.figure} (top row: stimuli; then one row per decoder, in the order given)`);
  });

program
  .command('quantize')
  .description('write an int8 copy of a decoder bundle (MatMul weights int8, activations int8 per frame), its validation SSIM/MSE change measured and recorded')
  .requiredOption('--model <dir>', 'float bundle folder')
  .requiredOption('--out <dir>', 'new bundle folder (must not exist or be empty)')
  .option('--data <dir>', "dataset whose validation tier measures the change (default: the bundle's training dataset)")
  .option('--max-ssim-drop <x>', 'refuse when validation SSIM falls by more than this', Number, 0.005)
  .option('--force', 'write the bundle even when the drop is over the bound (the manifest records it)')
  .action(async (o) => {
    const { quantizeBundle } = await import('./training/eval/quantize-bundle.js');
    const m = await quantizeBundle({ model: o.model, out: o.out, data: o.data, maxSsimDrop: o.maxSsimDrop, force: o.force });
    const v = m.precision!.validation;
    console.log(`bundle ${o.out}: ${m.name}; validation SSIM ${v.float.ssim.toFixed(4)} -> ${v.quantized.ssim.toFixed(4)}, MSE ${v.float.mse.toFixed(5)} -> ${v.quantized.mse.toFixed(5)}`);
  });

program
  .command('ensemble')
  .description("write one bundle whose graph runs several decoders (e.g. one recipe trained with several seeds) and averages their images; one decode per frame, served like any bundle")
  .requiredOption('--models <dirs>', 'comma-separated member bundle folders (same unit ids, std scaling and image size)')
  .requiredOption('--out <dir>', 'new bundle folder')
  .option('--name <name>', 'bundle name (default <first member>-ensemble<k>)')
  .option('--data <dir>', 'dataset whose validation tier scores the ensemble and each member (recorded in the manifest)')
  .action(async (o) => {
    const { ensembleBundle } = await import('./training/eval/ensemble-bundle.js');
    const m = await ensembleBundle({ members: String(o.models).split(',').filter(Boolean), out: o.out, name: o.name, data: o.data });
    const v = m.metrics.validation;
    console.log(`bundle ${o.out}: ${m.name}${v ? `; validation SSIML ${v.ssiml.toFixed(4)} MSE ${v.mse.toFixed(5)}` : ''}`);
  });

// The report's experiments: one sweep over seeds per figure; runs go to child processes or Slurm.
/** --seeds: a count n (1..n) or a comma-separated list, positive integers either way (1.5 is refused, not cut to 1). */
const seedsArg = (v: string): number | number[] => {
  // '2,' is the list of seed 2 alone (a bare '2' is the count 1..2).
  const list = v.split(',').filter((x) => x.trim() !== '').map((x) => Number(x.trim()));
  if (!list.length || list.some((n) => !Number.isInteger(n) || n <= 0)) throw new InvalidArgumentError('seeds must be a positive integer count or a comma-separated list of positive integers');
  return v.includes(',') ? list : list[0];
};
const experiment = program
  .command('experiment')
  .description("the report's experiments (Figures 1-4, B-All): a sweep x seeds, each run its own run folder; results.csv, figure, reconstruction grid; reruns resume");
for (const [name, what] of [
  ['data-scaling', 'quality against the number of training images (Figures 1 and 2, top)'],
  ['neuron-scaling', 'quality against the number of neurons: random subsets, the same for every seed (Figures 1 and 2, bottom)'],
  ['channels', "quality against the GAN readin's output channels (Figure 3)"],
  ['readin', 'GAN readin ablations: base, +C neuron coordinates, +T log response transform, +C+T (Figure 4, left)'],
  ['loss', 'training objective: log-SSIM, MSE, MAE (Figure 4, right)'],
  ['sessions', 'one mouse vs several pooled (B-6 vs B-All, Table I); missing mice are simulated with other seeds'],
] as const)
  experiment
    .command(name)
    .description(what)
    .requiredOption('--data <dirs...>', name === 'sessions' ? 'dataset folders: the first is evaluated, the others pooled with it' : 'dataset folder')
    .requiredOption('--out <dir>', 'experiment folder (plan.json, runs/, results.csv, figure.svg/png, reconstructions.png)')
    .option('--seeds <n|list>', 'seeds per swept value: a count n (1..n) or a comma-separated list (one seed alone: "2,"); more seeds than the --out folder plan add runs, finished ones kept', seedsArg, 3)
    .addOption(new Option('--decoder <kind>', 'decoder trained in every run').choices(['gan', 'cnn', 'ridge']).default('gan'))
    .addOption(new Option('--recipe <name>', "report: the report's decoders (whose settings these experiments vary); cortexcast: the ridge-anchored recipes").choices(['report', 'cortexcast']).default('report'))
    .addOption(new Option('--profile <name>', 'decoder (and encoder) sizes').choices(['small', 'paper']).default('small'))
    .option('--grid <values>', "comma-separated swept values (default: the report's range, cut to what the data has)")
    .option('--budget <time>', 'per run: wall-clock budget of one invocation, e.g. 90s, 30m, 2h (none by default)', duration('budget'))
    .option('--max-steps <n>', 'per run: stop after n steps', int('max-steps'))
    .option('--epochs <n>', 'per run: epochs (default 200)', int('epochs'))
    .option('--validate-every <n>', 'per run: validate every n steps (default every epoch)', int('validate-every'))
    .option('--subset-seed <n>', 'neuron-scaling: seed of the random neuron order whose first n neurons are each subset', int('subset-seed'), 1)
    .option('--encoder-budget <time>', 'GAN: budget of the encoder behind the MEIs (default 20m)', duration('encoder-budget'))
    .option('--encoder-max-steps <n>', 'GAN: step cap of that encoder (replaces the default budget)', int('encoder-max-steps'))
    .option('--mei-neurons <n>', 'GAN: readin neurons (MEIs) per session, the best-predicted', int('mei-neurons'), 512)
    .option('--mei-steps <n>', 'GAN: MEI gradient-ascent steps', int('mei-steps'), 100)
    .option('--jobs <n>', 'runs at once: child processes here, or the Slurm array throttle', int('jobs'))
    .option('--slurm', 'submit to Slurm as job arrays (GAN inputs, one task per run, the report after them) instead of running here')
    .option('--sbatch-args <args>', 'extra sbatch arguments for every job, e.g. "--partition=gpu --time=4:00:00 --cpus-per-task=4"')
    .option('--dry-run', 'write (or check) plan.json and stop')
    .action(async (o) => {
      const { startExperiment } = await import('./training/experiment/experiment.js');
      const r = await startExperiment(
        {
          name,
          data: o.data,
          out: o.out,
          seeds: o.seeds,
          decoder: o.decoder,
          recipe: o.recipe,
          profile: o.profile,
          grid: o.grid ? String(o.grid).split(',') : undefined,
          budgetSeconds: o.budget,
          maxSteps: o.maxSteps,
          epochs: o.epochs,
          validateEvery: o.validateEvery,
          subsetSeed: o.subsetSeed,
          encoderBudgetSeconds: o.encoderBudget,
          encoderMaxSteps: o.encoderMaxSteps,
          meiNeurons: o.meiNeurons,
          meiSteps: o.meiSteps,
        },
        { jobs: o.jobs, slurm: o.slurm, sbatchArgs: o.sbatchArgs ? String(o.sbatchArgs).split(/\s+/).filter(Boolean) : undefined, dryRun: o.dryRun },
      );
      if (r.report) console.log(`${r.report.table}\n${r.report.done}/${r.report.total} runs done; ${r.report.csv}${r.report.figure ? `, ${r.report.figure.svg}, ${r.report.figure.png}` : ''}${r.report.grid ? `, ${r.report.grid}` : ''}`);
      else if (o.dryRun) console.log(`plan: ${r.dir}/plan.json (${r.plan.runs.length} runs)`);
    });
experiment
  .command('resume <dir>')
  .description("go on with an experiment folder's own plan (here or on Slurm)")
  .option('--jobs <n>', 'runs at once', int('jobs'))
  .option('--slurm', 'submit what is left to Slurm')
  .option('--sbatch-args <args>', 'extra sbatch arguments for every job')
  .action(async (dir: string, o) => {
    const { resumeExperiment } = await import('./training/experiment/experiment.js');
    const r = await resumeExperiment(dir, { jobs: o.jobs, slurm: o.slurm, sbatchArgs: o.sbatchArgs ? String(o.sbatchArgs).split(/\s+/).filter(Boolean) : undefined });
    if (r.report) console.log(`${r.report.table}\n${r.report.done}/${r.report.total} runs done; ${r.report.csv}`);
  });
experiment
  .command('prepare <dir>')
  .description("one session's GAN inputs (encoder, MEIs) of a plan; what --jobs and Slurm tasks run")
  .requiredOption('--index <i>', 'preparation index in plan.json', count('index'))
  .action(async (dir: string, o) => {
    const { prepareSession } = await import('./training/experiment/prepare.js');
    await prepareSession(resolve(dir), o.index);
  });
experiment
  .command('run-one <dir>')
  .description('one run of a plan (train, evaluate, result.json); what --jobs and Slurm array tasks run')
  .requiredOption('--index <i>', 'run index in plan.json', count('index'))
  .action(async (dir: string, o) => {
    const { runOne } = await import('./training/experiment/run-one.js');
    await runOne(resolve(dir), o.index);
  });
experiment
  .command('report <dir>')
  .description('results.csv, summary.json, figure.svg/png and reconstructions.png from the finished runs')
  .action(async (dir: string) => {
    const { writeExperimentReport } = await import('./training/experiment/report.js');
    const r = await writeExperimentReport(resolve(dir));
    console.log(`${r.table}\n${r.done}/${r.total} runs done; ${r.csv}${r.figure ? `, ${r.figure.svg}, ${r.figure.png}` : ''}${r.grid ? `, ${r.grid}` : ''}`);
  });
experiment
  .command('status <dir>')
  .description('which runs are done, running, failed or pending, with an ETA')
  .option('--json', 'print it as JSON')
  .action(async (dir: string, o) => {
    const { experimentProgress, formatProgress } = await import('./training/experiment/status.js');
    const p = experimentProgress(resolve(dir));
    console.log(o.json ? JSON.stringify({ counts: p.counts, etaSeconds: p.etaSeconds, preparations: p.preparations, runs: p.runs, slurmJobs: p.slurmJobs }, null, 1) : formatProgress(resolve(dir), p));
  });

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

program
  .command('serve')
  .description('serve decoders live: gRPC ingest -> std scaling -> ONNX Runtime workers -> WebSocket fan-out, /metrics')
  .option('--model <dir>', 'bundle folder, optionally name=dir (repeatable)', collect)
  .option('--models-dir <dir>', 'a folder of bundle folders, each served under its folder name, read again on every reload (what `calibrate` writes to)')
  .option('--config <file>', 'JSON config file; its keys, with the matching flags and environment variables: docs/reference/configuration.md')
  .option('--host <addr>', 'bind address (default 127.0.0.1)')
  .option('--grpc-port <n>', 'gRPC port (default 50051)', Number)
  .option('--http-port <n>', 'HTTP/WebSocket/metrics port (default 8080)', Number)
  .option('--providers <list>', 'execution providers in order, e.g. cuda,webgpu,cpu')
  .option('--workers <n>', 'inference worker threads per model (default 1)', Number)
  .option('--threads <n>', 'ONNX Runtime intra-op threads of each inference worker (default 1, or CORTEXCAST_THREADS: the same setting every command reads)', Number)
  .addOption(new Option('--policy <p>', 'frame policy').choices(['latest', 'fifo']))
  .option('--queue-depth <n>', 'fifo queue depth per stream', Number)
  .option('--max-batch <n>', 'frames decoded together at most', Number)
  .option('--decode-nice <n>', 'nice value added to inference threads so ingest and fan-out run first (0-19, default 0; Linux)', Number)
  .option('--invenc-steps <n>', 'iterative decoders (invenc): optimisation steps per frame (default: the bundle\'s)', Number)
  .option('--token <token>', 'shared auth token for gRPC and WebSocket (shows in ps: prefer CORTEXCAST_TOKEN or --token-file)')
  .option('--token-file <file>', 'read the shared token from this file (first line): unlike --token, it does not show in ps')
  .option('--admin-token-file <file>', 'read the admin token (ReloadModels) from this file (or CORTEXCAST_ADMIN_TOKEN)')
  .option('--protect-http', 'require the token on /metrics, /healthz and /api/models (the default when a token is set)')
  .option('--no-protect-http', 'answer /metrics, /healthz and /api/models without the token even when one is set')
  .option('--allowed-origin <origin>', 'a web origin (scheme://host[:port]) whose pages may open the WebSocket, besides the server\'s own (repeatable)', collect)
  .option('--allowed-host <host>', 'a Host header (host[:port]) the HTTP port answers besides its own names (repeatable)', collect)
  .option('--tls-cert <file>', 'TLS certificate (PEM)')
  .option('--tls-key <file>', 'TLS private key (PEM)')
  .action(async (o, cmd: Command) => {
    const { loadServerConfig } = await import('./server/config.js');
    const { CortexcastServer } = await import('./server/server.js');
    const flags: Partial<ServerConfigInput> = {
      host: o.host,
      grpcPort: o.grpcPort,
      httpPort: o.httpPort,
      providers: o.providers ? String(o.providers).split(',') as ('cuda' | 'webgpu' | 'cpu')[] : undefined,
      workers: o.workers,
      threads: o.threads,
      framePolicy: o.policy,
      queueDepth: o.queueDepth,
      maxBatch: o.maxBatch,
      decodeNice: o.decodeNice,
      iterativeSteps: o.invencSteps,
      modelsDir: o.modelsDir,
      auth: {
        token: o.token,
        tokenFile: o.tokenFile,
        adminTokenFile: o.adminTokenFile,
        // commander sets protectHttp true by default because of --no-protect-http: only an explicit flag counts.
        protectHttp: cmd.getOptionValueSource('protectHttp') === 'cli' ? Boolean(o.protectHttp) : undefined,
        allowedOrigins: o.allowedOrigin,
        allowedHosts: o.allowedHost,
      },
      tls: o.tlsCert || o.tlsKey ? { cert: o.tlsCert, key: o.tlsKey } : undefined,
      models: (o.model as string[] | undefined)?.map((m) => {
        const eq = m.indexOf('=');
        return eq > 0 ? { name: m.slice(0, eq), path: m.slice(eq + 1) } : { path: m };
      }),
    };
    const server = await new CortexcastServer(loadServerConfig({ file: o.config, env: process.env, flags })).start();
    const stop = (): void => {
      void server.close().then(() => process.exit(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    process.on('SIGHUP', () => {
      server.reload().catch((e: Error) => server.log('error', 'reload failed; previous models still serve', { error: e.message }));
    });
  });

program
  .command('calibrate')
  .description("decode a new animal within minutes: learn a ridge decoder (and serve a transferred refiner on it) from a running server's response feed, refit every few seconds and have the server serve each refit")
  .requiredOption('--out <dir>', "the server's --models-dir: the bundle is written to <out>/<name>")
  .requiredOption('--name <model>', 'model name to write (the name the rig streams to)')
  .option('--server <url>', 'HTTP address of the server (response feed)', 'http://127.0.0.1:8080')
  .option('--grpc <host:port>', 'gRPC address of the server (ReloadModels)', '127.0.0.1:50051')
  .option('--token <token>', "the server's token (or CORTEXCAST_TOKEN; the response feed needs it)")
  .option('--token-file <file>', 'read the token from this file (first line)')
  .option('--admin-token <token>', 'token for ReloadModels when the server has an admin token (or CORTEXCAST_ADMIN_TOKEN)')
  .option('--admin-token-file <file>', 'read the admin token from this file (first line)')
  .option('--stimuli <path>', 'the stimulus set by image id: a dataset folder, an .nwb file or a folder of <id>.png/<id>.npy (default: the stimuli the frames carry)')
  .option('--every <duration>', 'seconds between refits', duration('--every'), 5)
  .addOption(new Option('--forget <mode>', 'drift: keep every frame (none), the last --memory of them (window), or weight them by exp(-age/--memory) (decay)').choices(['none', 'window', 'decay']).default('none'))
  .option('--memory <duration>', 'window length or decay time of --forget', duration('--memory'), 600)
  .option('--refiner <dir>', 'a refiner from `train refiner`, served on top of the calibrated ridge')
  .option('--held-out <fraction>', 'fraction of image ids held out to choose the regularisation and score', fraction('--held-out'), 0.1)
  .option('--min-frames <n>', 'train frames before the first bundle', int('--min-frames'), 20)
  .option('--alphas <list>', 'comma-separated regularisation multiples to try')
  .addOption(new Option('--image-size <hxw>', 'decoded image size').choices(['36x64', '64x64']).default('36x64'))
  .option('--stream <id>', 'only frames of this stream')
  .option('--model <name>', 'only frames sent to this model name (default: --name; * for every frame)')
  .option('--metrics-port <n>', 'serve the calibration\'s Prometheus metrics on 127.0.0.1:<n>/metrics', count('--metrics-port'), 0)
  .option('--from <path>', 'calibrate from a recording instead of a server\'s feed: a dataset folder or an .nwb file, read in trial order')
  .option('--tier <tier>', '--from: the tier to read', 'train')
  .option('--rate <hz>', '--from: trials per second of the recording (the clock of --every and --memory)', positive('--rate'), 2)
  .option('--reload', '--from: have the server (--grpc) reload after each bundle')
  .action(async (o) => {
    const { readFileSync } = await import('node:fs');
    const { runLiveCalibration } = await import('./training/calibrate/live.js');
    const { StimulusSet } = await import('./training/calibrate/stimuli.js');
    const { loadRefiner } = await import('./training/calibrate/refiner.js');
    const { ccError } = await import('./common/errors.js');
    const fromFile = (f?: string): string | undefined => (f ? readFileSync(f, 'utf8').split('\n')[0].trim() : undefined);
    const token = o.token ?? fromFile(o.tokenFile) ?? process.env.CORTEXCAST_TOKEN;
    const [h, w] = (o.imageSize as string).split('x').map(Number);
    if (o.from) {
      const { calibrateFromRecording } = await import('./training/calibrate/from-recording.js');
      const refits = await calibrateFromRecording({
        from: o.from,
        tier: o.tier,
        rate: o.rate,
        everySeconds: o.every,
        name: o.name,
        modelsDir: resolve(o.out),
        height: h,
        width: w,
        forgetting: o.forget === 'none' ? { kind: 'none' } : { kind: o.forget, seconds: o.memory },
        refiner: o.refiner ? loadRefiner(o.refiner) : undefined,
        heldOutFraction: o.heldOut,
        minFrames: o.minFrames,
        alphas: o.alphas ? String(o.alphas).split(',').map(Number) : undefined,
        reload: o.reload ? { grpc: o.grpc, token: o.adminToken ?? fromFile(o.adminTokenFile) ?? process.env.CORTEXCAST_ADMIN_TOKEN ?? token } : undefined,
        log: (m) => process.stderr.write(m + '\n'),
      });
      const last = refits[refits.length - 1];
      console.log(`calibrate: ${refits.length} bundles written to ${join(resolve(o.out), o.name)}${last ? `; the last from ${last.frames} train frames, held-out SSIM ${last.point.ssim.toFixed(3)}` : ''}`);
      return;
    }
    if (!token) throw ccError('CC_ERR_OPTION', 'calibrate needs the server token (--token, --token-file or CORTEXCAST_TOKEN): the response feed is refused without it');
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    process.once('SIGTERM', () => ac.abort());
    const { served, calibrator } = await runLiveCalibration({
      name: o.name,
      modelsDir: resolve(o.out),
      height: h,
      width: w,
      server: o.server,
      grpc: o.grpc,
      token,
      adminToken: o.adminToken ?? fromFile(o.adminTokenFile) ?? process.env.CORTEXCAST_ADMIN_TOKEN,
      everySeconds: o.every,
      stimuli: o.stimuli ? await StimulusSet.open(o.stimuli, h, w) : undefined,
      forgetting: o.forget === 'none' ? { kind: 'none' } : { kind: o.forget, seconds: o.memory },
      refiner: o.refiner ? loadRefiner(o.refiner) : undefined,
      heldOutFraction: o.heldOut,
      minFrames: o.minFrames,
      alphas: o.alphas ? String(o.alphas).split(',').map(Number) : undefined,
      stream: o.stream,
      model: o.model,
      metricsPort: o.metricsPort || undefined,
      signal: ac.signal,
    });
    console.log(`calibrate: ${served.length} bundles served; the last used ${calibrator.trainFrames} train frames (${calibrator.skipped} frames had no stimulus)`);
  });

program
  .command('replay')
  .description("stream a dataset tier to a server in real time (the rig's side), with the stimuli for viewers")
  .requiredOption('--data <dir>', 'dataset folder (SENSORIUM layout), or an .nwb file: streamed one imaging frame at a time with the stimulus on screen')
  .requiredOption('--model <name>', 'model name on the server')
  .option('--server <host:port>', 'gRPC address', '127.0.0.1:50051')
  .option('--tier <tier>', 'tier to replay', 'test')
  .option('--speed <x>', ".nwb: playback speed against the recording's own frame rate (0 = as fast as possible; --rate is ignored)", Number, 1)
  .option('--rate <hz>', 'frames per second (0 = as fast as possible)', Number, 30)
  .option('--loop', 'start over at the end')
  .option('--start <i>', 'first trial of the tier (.nwb: first imaging frame)', Number)
  .option('--stop <i>', 'stop before this trial (.nwb: imaging frame)', Number)
  .option('--stream <id>', 'stream id', 'replay')
  .option('--token <token>', 'auth token (shows in ps: prefer CORTEXCAST_TOKEN or --token-file)')
  .option('--token-file <file>', 'read the auth token from this file (first line)')
  .option('--frames <n>', 'stop after n frames', Number)
  .addOption(new Option('--protocol <p>', "cortexcast: StreamFrames with acks and viewers; v2: Open Inference Protocol ModelInfer per frame (Triton, KServe, or cortexcast)").choices(['cortexcast', 'v2']).default('cortexcast'))
  .action(async (o) => {
    const { replay } = await import('../clients/replay/replay.js');
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    const line = (s: { sent: number; decoded: number; dropped: number; rejected: number; lost: number; reconnects: number; jitterP50: number; jitterP99: number; elapsedS: number; lastReject?: string; rttP50?: number; rttP99?: number; droppedBy?: Record<string, number> }): string =>
      `sent ${s.sent} decoded ${s.decoded} dropped ${s.dropped}` +
      (s.droppedBy && s.dropped ? ` (${Object.entries(s.droppedBy).map(([why, n]) => `${why} ${n}`).join(', ')})` : '') +
      ` rejected ${s.rejected} lost ${s.lost} reconnects ${s.reconnects} | jitter p50 ${s.jitterP50.toFixed(2)} ms p99 ${s.jitterP99.toFixed(2)} ms` +
      (s.rttP50 !== undefined ? ` | round trip p50 ${s.rttP50.toFixed(2)} ms p99 ${(s.rttP99 ?? 0).toFixed(2)} ms` : '') +
      ` | ${s.elapsedS.toFixed(1)} s` +
      (s.lastReject ? ` | last rejection: ${s.lastReject}` : '');
    const stats = await replay({
      data: o.data,
      server: o.server,
      model: o.model,
      tier: o.tier,
      rate: o.rate,
      loop: o.loop,
      start: o.start,
      stop: o.stop,
      streamId: o.stream,
      token: clientToken(o),
      maxFrames: o.frames,
      protocol: o.protocol,
      speed: o.speed,
      nwb: { series: program.opts().nwbSeries, stimulus: program.opts().nwbStimulus, templates: program.opts().nwbTemplates },
      signal: ac.signal,
      onProgress: (s) => process.stderr.write(`\r${line(s)}   `),
    });
    process.stderr.write('\n');
    console.log(line(stats));
  });

program
  .command('record')
  .description('save a live session to disk: one PNG (and optionally .npy) per frame plus frames.jsonl with every timestamp, or (--nwb) one NWB file')
  .option('--out <dir>', 'output folder (PNG per frame, frames.jsonl)')
  .option('--nwb <file>', 'write one NWB file instead: decoded frames, stimuli, latency stages, served models (see docs/guides/nwb.md)')
  .option('--server <url>', 'HTTP address of the server', 'http://127.0.0.1:8080')
  .option('--stream <id>', 'stream id (* = all)', '*')
  .option('--model <name>', 'model name (* = all)', '*')
  .option('--npy', 'also write the float32 model output of each frame')
  .option('--frames <n>', 'stop after n frames', Number)
  .option('--token <token>', 'auth token (shows in ps: prefer CORTEXCAST_TOKEN or --token-file)')
  .option('--token-file <file>', 'read the auth token from this file (first line)')
  .action(async (o) => {
    if (!o.out === !o.nwb) throw ccError('CC_ERR_OPTION', 'record needs --out <dir> or --nwb <file> (one of them)');
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    if (o.nwb) {
      const { recordNwb } = await import('../clients/record/record-nwb.js');
      const r = await recordNwb({ server: o.server, file: resolve(o.nwb), stream: o.stream, model: o.model, maxFrames: o.frames, token: clientToken(o), signal: ac.signal, onFrame: (n) => n % 30 === 0 && process.stderr.write(`\rrecorded ${n} frames`) });
      console.log(`\nrecorded ${r.frames} frames to ${r.file}`);
      return;
    }
    const { record } = await import('../clients/record/record.js');
    const r = await record({ server: o.server, out: o.out, stream: o.stream, model: o.model, npy: o.npy, maxFrames: o.frames, token: clientToken(o), signal: ac.signal, onFrame: (n) => n % 30 === 0 && process.stderr.write(`\rrecorded ${n} frames`) });
    console.log(`\nrecorded ${r.frames} frames to ${r.dir}`);
  });

program
  .command('demo', { isDefault: false })
  .description('the out-of-the-box demo (npm start): simulated V1 data and a decoder (made once, cached), the server, and a 30 Hz replay; open the printed viewer URL')
  .option('--cache <dir>', 'where the demo keeps its data and bundle', '.cache/demo')
  .option('--http-port <n>', 'viewer / metrics port', Number, 8080)
  .option('--grpc-port <n>', 'gRPC port', Number, 50051)
  .option('--seconds <n>', 'stop after n seconds (default: run until Ctrl-C)', Number)
  .option('--no-train', 'do not train the CNN decoder in the background')
  .action(async (o) => {
    const { runDemo } = await import('./demo.js');
    await runDemo({ cacheDir: o.cache, httpPort: o.httpPort, grpcPort: o.grpcPort, seconds: o.seconds, trainCnn: o.train });
  });

/**
 * Parse the command line and run the command. Importing this module only builds `program` (the docs
 * generator walks it); bin/cortexcast.js calls this.
 */
export async function main(argv: readonly string[] = process.argv): Promise<void> {
  await program.parseAsync(argv).catch(reportFailure);
}

function reportFailure(e: unknown): never {
  if (e instanceof CortexcastError) {
    console.error(`error: ${e.message}`);
    process.exit(2);
  }
  // A graph that cannot be built from the given options (shapes, profiles) is the user's to fix too.
  if (e instanceof Error && e.name === 'GraphError') {
    console.error(`error: CC_ERR_GRAPH: model graph: ${e.message}`);
    process.exit(2);
  }
  console.error(e);
  process.exit(1);
}

