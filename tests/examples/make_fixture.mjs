// Makes the USE-lite verification fixture in tests/examples/data/ from
// TensorFlow.js, the model's own runtime, so that the C++ engine is checked
// against something nobody here wrote:
//
//   use_lite_tokens.txt          token ids, one line per sentence
//   use_lite_embeddings.npy      float32 [n, 512], TF.js's embeddings
//
// for the sentences of use_lite_sentences.txt (KJV verses plus a few
// KJV-derived lines that exercise the tokenizer's rules).
//
// Token ids: TF.js has no tokenizer (the official JS wrapper does it outside
// the graph), so this script carries its own, written from the rules in
// USE_LITE.md and examples/use_lite/tokenizer.hpp with different data
// structures from the C++ one (a Map of pieces instead of a trie, typed arrays
// for the Viterbi). The fixture's ids are this tokenizer's, and the script
// refuses to write them unless they are identical to the C++ tokenizer's
// (--cpp-tokens) and, when it is installed, to the official wrapper's
// (@energetic-ai/embeddings, driven with a stand-in model that records the
// ids it is given).
//
// Setup (pure JS, no native code; anywhere outside the repository):
//   D=/tmp/use-lite-tfjs
//   npm install --prefix "$D" --ignore-scripts @tensorflow/tfjs-core@4.22.0 \
//       @tensorflow/tfjs-converter@4.22.0 @tensorflow/tfjs-backend-cpu@4.22.0
//   # optional third check: npm install --prefix "$D" --ignore-scripts @energetic-ai/embeddings@0.2.0 @energetic-ai/core@0.2.0
//   M=$(scripts/fetch_use_lite.sh)
//   build/examples/use_lite/use_lite tokenize --model "$M" \
//       --sentences tests/examples/data/use_lite_sentences.txt > /tmp/cpp_tokens.txt
//   node tests/examples/make_fixture.mjs --tfjs "$D" --model "$M" \
//       --sentences tests/examples/data/use_lite_sentences.txt \
//       --cpp-tokens /tmp/cpp_tokens.txt --out tests/examples/data
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) throw new Error(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of ['tfjs', 'model', 'sentences', 'out'])
    if (!args[k]) throw new Error(`--${k} is required (see the comment at the top of this script)`);
  return args;
}

// One sentence per line, verbatim; a final newline does not start a sentence.
function readLines(file) {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

// ---------------------------------------------------------------------------
// The tokenizer, from the rules.
function makeTokenizer(vocab) {
  const RESERVED = 6;             // ids 0..5 are never matched
  const SEP = '\u2581';           // '▁'
  const pieces = new Map();       // piece -> {id, score}; a later duplicate replaces an earlier one
  let maxLen = 0;                 // in code points
  for (let id = RESERVED; id < vocab.length; id++) {
    const [piece, score] = vocab[id];
    pieces.set(piece, { id, score: score === null ? 0 : score });
    maxLen = Math.max(maxLen, Array.from(piece).length);
  }
  return (sentence) => {
    const normalized = sentence.normalize('NFKC');
    const cps = normalized.length === 0 ? [] : [SEP, ...Array.from(normalized).map((c) => (c === ' ' ? SEP : c))];
    const n = cps.length;
    // Candidates grouped by end position, in ascending start order.
    const byEnd = Array.from({ length: n + 1 }, () => []);
    for (let start = 0; start < n; start++) {
      let found = false;
      let piece = '';
      for (let len = 1; len <= maxLen && start + len <= n; len++) {
        piece += cps[start + len - 1];
        const hit = pieces.get(piece);
        if (hit !== undefined) {
          byEnd[start + len].push({ start, id: hit.id, score: hit.score });
          found = true;
        }
      }
      if (!found) byEnd[start + 1].push({ start, id: 0, score: 0 });
    }
    const best = new Float64Array(n + 1);  // 0 = unset (and best[0])
    const word = new Int32Array(n + 1);
    for (let end = 1; end <= n; end++)
      for (const c of byEnd[end]) {
        const s = c.score + best[c.start];
        if (best[end] === 0 || s >= best[end]) {
          best[end] = s;
          word[end] = c.id;
        }
      }
    // Backtrack by each piece's JS length (UTF-16 units), then merge unknown runs.
    const reversed = [];
    for (let pos = n; pos > 0; pos -= vocab[word[pos]][0].length) reversed.push(word[pos]);
    const ids = [];
    for (let i = reversed.length - 1; i >= 0; i--)
      if (!(reversed[i] === 0 && ids.length && ids[ids.length - 1] === 0)) ids.push(reversed[i]);
    return ids;
  };
}

function sameIds(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// The official wrapper's ids, if it is installed: its EmbeddingsModel
// tokenizes, then hands {indices, values} to model.executeAsync — a stand-in
// model records the values (the ids of all sentences, concatenated).
async function officialIds(require, vocab, sentences) {
  let lib, core;
  try {
    lib = require('@energetic-ai/embeddings');
    core = require('@energetic-ai/core');
  } catch {
    return null;
  }
  // The wrapper builds its input tensors with its own TF.js build, whose
  // only backend is wasm (shipped inside the package).
  await core.setBackend('wasm');
  const out = [];
  const model = new lib.EmbeddingsModel({
    vocabulary: vocab,
    model: {
      executeAsync: async ({ values }) => {
        out.push(Array.from(values.dataSync()));
        return { array: async () => [[0]], dispose: () => {} };
      },
    },
  });
  const result = [];
  for (const s of sentences) {
    out.length = 0;
    await model.embed([s]);
    result.push(out[0]);
  }
  return result;
}

// ---------------------------------------------------------------------------
// .npy writer: format 1.0, '<f4', C order, header padded to 64 bytes.
function writeNpyF32(file, data, rows, cols) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from('\x93NUMPY', 'latin1').copy(pre, 0);
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(new Float32Array(data).buffer);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const require = createRequire(path.join(path.resolve(args.tfjs), 'node_modules', 'noop.js'));
  const tf = require('@tensorflow/tfjs-core');
  require('@tensorflow/tfjs-backend-cpu');
  const tfconv = require('@tensorflow/tfjs-converter');
  await tf.setBackend('cpu');

  const sentences = readLines(args.sentences);
  const vocab = JSON.parse(fs.readFileSync(path.join(args.model, 'vocab.json'), 'utf8'));
  const encode = makeTokenizer(vocab);
  const ids = sentences.map(encode);

  // Cross-checks: the fixture's ids must be everyone's ids.
  if (args['cpp-tokens']) {
    const cpp = readLines(args['cpp-tokens']).map((l) => (l === '' ? [] : l.split(' ').map(Number)));
    if (cpp.length !== ids.length) throw new Error(`--cpp-tokens has ${cpp.length} lines for ${ids.length} sentences`);
    ids.forEach((v, i) => {
      if (!sameIds(v, cpp[i])) throw new Error(`sentence ${i}: JS ids ${v} != C++ ids ${cpp[i]}`);
    });
    console.error(`make_fixture: C++ and JS tokenizers agree on ${ids.length} sentences`);
  } else {
    console.error('make_fixture: warning: no --cpp-tokens, the C++ tokenizer was not cross-checked');
  }
  const official = await officialIds(require, vocab, sentences);
  if (official) {
    ids.forEach((v, i) => {
      if (!sameIds(v, official[i])) throw new Error(`sentence ${i}: JS ids ${v} != official wrapper's ${official[i]}`);
    });
    console.error(`make_fixture: the official wrapper (@energetic-ai/embeddings) agrees on ${ids.length} sentences`);
  }

  // The model, through a custom IO handler: model.json's topology and the
  // shards concatenated in manifest order, as tfjs-converter would fetch them.
  const modelJson = JSON.parse(fs.readFileSync(path.join(args.model, 'model.json'), 'utf8'));
  const shards = modelJson.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(args.model, p))));
  const blob = Buffer.concat(shards);
  const handler = {
    load: async () => ({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest.flatMap((g) => g.weights),
      weightData: blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength),
    }),
  };
  const model = await tfconv.loadGraphModel(handler);

  // One sentence per run, as the wrapper does for embed(string): no padding
  // enters the fixture (the graph pads a batch to its longest sentence).
  const rows = [];
  for (const v of ids) {
    const indices = tf.tensor2d(v.map((_, t) => [0, t]), [v.length, 2], 'int32');
    const values = tf.tensor1d(v, 'int32');
    const out = await model.executeAsync({ indices, values });
    rows.push(...out.dataSync());
    tf.dispose([indices, values, out]);
  }

  fs.mkdirSync(args.out, { recursive: true });
  fs.writeFileSync(path.join(args.out, 'use_lite_tokens.txt'), ids.map((v) => v.join(' ') + '\n').join(''));
  writeNpyF32(path.join(args.out, 'use_lite_embeddings.npy'), rows, ids.length, rows.length / ids.length);
  console.error(`make_fixture: wrote ${ids.length} sentences to ${args.out} (tfjs-core ${tf.version_core})`);
}

main().catch((e) => {
  console.error(`make_fixture: ${e.message}`);
  process.exit(1);
});
