// images.js — #/images: every image and version (format, size, created), which machines run
// each version (current) or are being moved to it (assigned), and the chunk store's dedup
// savings, computed from the uploaded versions' manifests (chunks shared by hash are stored
// once).
import { get, enc, allMachines } from './api.js';
import { h, bytes, when } from './dom.js';
import { flash } from './app.js';

// Payload bytes of each stored (DATA/RAW) chunk of a manifest, by hash.
function storedChunks(manifest) {
  const out = new Map();
  for (const c of manifest.chunks || []) {
    if ((c[0] === 'D' || c[0] === 'R') && typeof c[2] === 'number') out.set(c[1], c[2]);
  }
  return out;
}

function pct(x) {
  return (Math.round(x * 1000) / 10).toFixed(1) + '%';
}

export function renderImages(view) {
  const root = h('div', { class: 'page' });
  view.append(root);
  root.append(h('h1', {}, 'Images'), h('p', { class: 'help' }, 'Loading…'));
  (async () => {
    let versions;
    let machines;
    try {
      [versions, machines] = await Promise.all([get('/api/v1/images').then((r) => r.items), allMachines()]);
    } catch (e) {
      flash(e);
      return;
    }
    // Manifests of uploaded versions (external images have none).
    const manifests = new Map();
    await Promise.all(versions.filter((v) => v.format === 'kiln').map(async (v) => {
      try {
        manifests.set(v.name + '\0' + v.version,
                      storedChunks(await get('/api/v1/images/' + enc(v.name) + '/versions/' + enc(v.version) + '/manifest')));
      } catch (e) {
        flash(e);
      }
    }));
    const all = new Map();
    let referenced = 0;
    for (const chunks of manifests.values()) {
      for (const [hash, n] of chunks) {
        all.set(hash, n);
        referenced += n;
      }
    }
    const stored = [...all.values()].reduce((a, b) => a + b, 0);
    root.lastChild.remove();
    root.append(h('section', { class: 'card', id: 'dedup' }, h('h2', {}, 'Chunk store'),
      manifests.size
        ? h('p', {}, manifests.size + ' uploaded versions reference ' + bytes(referenced) + ' of compressed chunks; ' +
            'the store keeps ' + bytes(stored) + ' (' + all.size + ' distinct chunks): dedup saves ' +
            bytes(referenced - stored) + ' (' + pct(referenced ? (referenced - stored) / referenced : 0) + ').')
        : h('p', { class: 'help' }, 'No uploaded (.kiln) versions: external images are not stored by kilnd.')));
    const names = [...new Set(versions.map((v) => v.name))];
    if (!names.length) root.append(h('p', { class: 'empty' }, 'No images registered.'));
    for (const name of names) {
      const vs = versions.filter((v) => v.name === name);
      // This image's dedup: its versions' chunks against each other.
      const mine = new Map();
      let ref = 0;
      for (const v of vs) {
        const c = manifests.get(v.name + '\0' + v.version);
        if (!c) continue;
        for (const [hash, n] of c) {
          mine.set(hash, n);
          ref += n;
        }
      }
      const kept = [...mine.values()].reduce((a, b) => a + b, 0);
      root.append(h('section', { class: 'card image', 'data-image': name },
        h('h2', {}, name),
        ref ? h('p', { class: 'help' }, 'Versions share chunks: ' + bytes(kept) + ' stored for ' + bytes(ref) +
                                        ' referenced (saves ' + pct((ref - kept) / ref) + ').') : null,
        h('table', { class: 'grid' },
          h('thead', {}, h('tr', {}, ['Version', 'Format', 'Size', 'Chunk bytes', 'Created', 'By', 'Running', 'Assigned']
            .map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, vs.map((v) => {
            const c = manifests.get(v.name + '\0' + v.version);
            const run = machines.filter((m) => m.current_version && m.current_version.image === v.name &&
                                               m.current_version.version === v.version);
            const asg = machines.filter((m) => m.assignment && m.assignment.image === v.name &&
                                               m.assignment.version === v.version);
            const list = (ms) => ms.length
              ? ms.map((m, i) => [i ? ', ' : '', h('a', { href: '#/machines/' + m.id }, m.name || m.macs[0])])
              : '—';
            return h('tr', { 'data-version': v.version },
              h('td', {}, v.version, v.description ? h('div', { class: 'help' }, v.description) : null),
              h('td', {}, v.format), h('td', {}, bytes(v.size_bytes)),
              h('td', {}, c ? bytes([...c.values()].reduce((a, b) => a + b, 0)) : 'external'),
              h('td', {}, when(v.created_at)), h('td', {}, v.created_by),
              h('td', { class: 'running' }, list(run)), h('td', {}, list(asg)));
          })))));
    }
  })();
}
