// Small line charts drawn as SVG: no library, nothing fetched from elsewhere. Values are
// numbers or null (a gap); the y axis starts at 0 and ends at the largest value shown.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 400;
const HEIGHT = 140;
const PAD = { top: 10, right: 8, bottom: 20, left: 44 };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  el.append(...children);
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((m) => m >= value);
}

/** Points of one series as polyline segments, broken where a value is missing. */
function segments(values, x, y) {
  const parts = [];
  let current = [];
  values.forEach((value, i) => {
    if (value === null || value === undefined) {
      if (current.length) parts.push(current);
      current = [];
    } else current.push(`${x(i).toFixed(1)},${y(value).toFixed(1)}`);
  });
  if (current.length) parts.push(current);
  return parts;
}

/**
 * A chart of `series` ([{name, values, kind}]; kind picks the colour: ok, bad, accent, warn)
 * over `times` (RFC 3339 strings, one per value), with `format` for the axis and legend.
 */
export function lineChart(title, times, series, { format = String } = {}) {
  const count = times.length;
  const shown = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...shown));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (count < 2 ? plotW / 2 : (i / (count - 1)) * plotW);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const label = (iso) => (iso ? iso.slice(11, 16) : '');
  const latest = series.map((s) => {
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    return `${s.name} ${last === undefined ? '–' : format(last)}`;
  }).join(', ');
  const chart = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart', role: 'img',
    'aria-label': `${title}: latest ${latest}`,
  },
  svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0), class: 'chart-axis' }),
  svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(top), y2: y(top), class: 'chart-grid' }),
  svg('text', { x: PAD.left - 6, y: y(top) + 4, class: 'chart-label', 'text-anchor': 'end' }, format(top)),
  svg('text', { x: PAD.left - 6, y: y(0), class: 'chart-label', 'text-anchor': 'end' }, '0'),
  svg('text', { x: PAD.left, y: HEIGHT - 4, class: 'chart-label' }, `${label(times[0])}Z`),
  svg('text', { x: WIDTH - PAD.right, y: HEIGHT - 4, class: 'chart-label', 'text-anchor': 'end' },
    `${label(times[count - 1])}Z`),
  ...series.flatMap((s) => segments(s.values, x, y).map((points) => (points.length === 1
    ? svg('circle', { cx: points[0].split(',')[0], cy: points[0].split(',')[1], r: 2, class: `chart-dot chart-${s.kind}` })
    : svg('polyline', { points: points.join(' '), class: `chart-line chart-${s.kind}` })))));
  const legend = document.createElement('div');
  legend.className = 'chart-legend';
  for (const s of series) {
    const item = document.createElement('span');
    item.className = `chart-key chart-${s.kind}`;
    item.textContent = s.name;
    legend.append(item);
  }
  const figure = document.createElement('figure');
  figure.className = 'chart-figure';
  const caption = document.createElement('figcaption');
  caption.textContent = title;
  figure.append(caption, chart, legend);
  return figure;
}
