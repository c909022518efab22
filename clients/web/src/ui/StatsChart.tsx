/** Sample is one GetStats poll. */
export interface Sample {
  at: number;
  connections: number;
  onlineUsers: number;
  rooms: number;
  inPerSec: number;
  outPerSec: number;
  inTotal: number;
  outTotal: number;
}

interface Series {
  label: string;
  color: string;
  values: number[];
  /** dashed draws the line dashed, so equal series stay distinguishable. */
  dashed?: boolean;
}

const W = 360;
const H = 140;
const PAD = { l: 36, r: 8, t: 10, b: 20 };

/** niceMax rounds a maximum up to 1, 2 or 5 times a power of ten. */
export function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** points maps values to an SVG polyline within the plot area. */
export function points(values: number[], max: number, slots: number): string {
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  const step = slots > 1 ? iw / (slots - 1) : 0;
  const offset = slots - values.length;
  return values
    .map((v, i) => {
      const x = PAD.l + (i + offset) * step;
      const y = PAD.t + ih - (Math.min(v, max) / max) * ih;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
}

function LineChart({ title, series, slots, unit }: { title: string; series: Series[]; slots: number; unit: string }) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const ih = H - PAD.t - PAD.b;
  const latest = series.map((s) => `${s.label} ${fmt(s.values[s.values.length - 1] ?? 0)}${unit}`).join(", ");
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: ${latest}`} width="100%">
        <title>{title}</title>
        {[0, 0.5, 1].map((f) => {
          const y = PAD.t + ih - f * ih;
          return (
            <g key={f}>
              <line x1={PAD.l} x2={W - PAD.r} y1={y} y2={y} className="grid" />
              <text x={PAD.l - 4} y={y + 4} textAnchor="end" className="axis">
                {fmt(max * f)}
              </text>
            </g>
          );
        })}
        <text x={PAD.l} y={H - 4} className="axis">
          −{Math.round(((slots - 1) * 2))} s
        </text>
        <text x={W - PAD.r} y={H - 4} textAnchor="end" className="axis">
          now
        </text>
        {series.map((s) =>
          s.values.length > 1 ? (
            <polyline
              key={s.label}
              points={points(s.values, max, slots)}
              fill="none"
              stroke={s.color}
              strokeWidth={s.dashed ? 2 : 3}
              strokeDasharray={s.dashed ? "5 4" : undefined}
              strokeLinejoin="round"
            />
          ) : null,
        )}
      </svg>
      <figcaption>
        <strong>{title}</strong>{" "}
        {series.map((s) => (
          <span key={s.label} className="legend">
            <span className="swatch" style={{ background: s.color }} aria-hidden="true" /> {s.label}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/** StatsChart draws the last minute of stats as two small line charts. */
export function StatsChart({ samples }: { samples: Sample[] }) {
  const slots = 60;
  return (
    <div className="charts" data-testid="stats-chart">
      <LineChart
        title="Connections and online users"
        slots={slots}
        unit=""
        series={[
          { label: "connections", color: "#1d4ed8", values: samples.map((s) => s.connections) },
          { label: "online users", color: "#047857", values: samples.map((s) => s.onlineUsers), dashed: true },
        ]}
      />
      <LineChart
        title="Messages per second"
        slots={slots}
        unit="/s"
        series={[
          { label: "in", color: "#b45309", values: samples.map((s) => s.inPerSec) },
          { label: "out", color: "#7c3aed", values: samples.map((s) => s.outPerSec), dashed: true },
        ]}
      />
    </div>
  );
}
