// Painting region masks over the content image: one canvas at the image's aspect ratio,
// each region painted in its own opaque colour (a later stroke replaces an earlier one),
// the eraser clears. Exported as one black/white PNG per region (white = that region).

export const REGION_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
const MAX_SIDE = 1024; // canvas resolution: enough for a mask, light to scan

function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class MaskPainter {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.colour = REGION_COLOURS[0];
    this.tool = "brush";
    this.size = 40; // in display pixels
    this.onchange = () => {};
    let last = null;
    const point = (e) => {
      const r = canvas.getBoundingClientRect();
      return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
    };
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      last = point(e);
      this.stroke(last, last);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      const p = point(e);
      this.stroke(last, p);
      last = p;
    });
    const end = () => {
      if (last) this.onchange();
      last = null;
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
  }

  /** Size the canvas for an image of ``width`` x ``height`` (clears it). */
  reset(width, height) {
    const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
    this.canvas.width = Math.max(1, Math.round(width * scale));
    this.canvas.height = Math.max(1, Math.round(height * scale));
    this.onchange();
  }

  stroke([x0, y0], [x1, y1]) {
    const c = this.ctx;
    const r = this.canvas.getBoundingClientRect();
    c.save();
    c.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    c.strokeStyle = this.colour;
    c.lineWidth = (this.size * this.canvas.width) / Math.max(1, r.width);
    c.lineCap = "round";
    c.lineJoin = "round";
    c.beginPath();
    c.moveTo(x0, y0);
    c.lineTo(x1 + 0.01, y1);
    c.stroke();
    c.restore();
  }

  fill() {
    this.ctx.save();
    this.ctx.fillStyle = this.colour;
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.ctx.restore();
    this.onchange();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.onchange();
  }

  /** Per pixel: the index in ``colours`` of the nearest region colour, -1 where unpainted. */
  labels(colours) {
    const { data } = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    const refs = colours.map(rgb);
    const out = new Int8Array(data.length / 4);
    for (let i = 0, p = 0; i < data.length; i += 4, p++) {
      if (data[i + 3] < 128) {
        out[p] = -1;
        continue;
      }
      let best = 0;
      let bestDist = Infinity;
      for (let k = 0; k < refs.length; k++) {
        const [r, g, b] = refs[k];
        const d = (data[i] - r) ** 2 + (data[i + 1] - g) ** 2 + (data[i + 2] - b) ** 2;
        if (d < bestDist) { bestDist = d; best = k; }
      }
      out[p] = best;
    }
    return out;
  }

  /** Fraction of the image painted for each of ``colours``. */
  coverage(colours) {
    const labels = this.labels(colours);
    const counts = new Array(colours.length).fill(0);
    for (const l of labels) if (l >= 0) counts[l]++;
    return counts.map((c) => c / labels.length);
  }

  /** One PNG blob per colour: white where that region is painted, black elsewhere. */
  async masks(colours) {
    const labels = this.labels(colours);
    const { width, height } = this.canvas;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const octx = out.getContext("2d");
    const blobs = [];
    for (let k = 0; k < colours.length; k++) {
      const img = octx.createImageData(width, height);
      for (let p = 0; p < labels.length; p++) {
        const v = labels[p] === k ? 255 : 0;
        img.data[4 * p] = img.data[4 * p + 1] = img.data[4 * p + 2] = v;
        img.data[4 * p + 3] = 255;
      }
      octx.putImageData(img, 0, 0);
      blobs.push(await new Promise((resolve) => out.toBlob(resolve, "image/png")));
    }
    return blobs;
  }
}
