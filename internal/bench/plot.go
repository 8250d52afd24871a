package bench

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// PlotScale draws the scale benchmark's costs against the number of keys into
// path (.svg or .png): CPU per request under load, and idle CPU per held key.
func PlotScale(rows []ScaleRow, path string) error {
	p := plot.New()
	p.Title.Text = "ratefleet: cost per key and per request as keys grow"
	p.X.Label.Text = "keys (five workers)"
	p.Y.Label.Text = "CPU, microseconds"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	perReq := make(plotter.XYs, 0, len(rows))
	idle := make(plotter.XYs, 0, len(rows))
	for _, r := range rows {
		perReq = append(perReq, plotter.XY{X: float64(r.Keys), Y: float64(r.CPUPerRequest.Microseconds())})
		if r.Held > 0 {
			idle = append(idle, plotter.XY{X: float64(r.Keys), Y: r.IdleCores * 1e6 / float64(r.Held)})
		}
	}
	colors := []color.Color{color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}}
	shapes := []draw.GlyphDrawer{draw.CircleGlyph{}, draw.TriangleGlyph{}} // told apart without colour too
	dashes := [][]vg.Length{nil, {vg.Points(4), vg.Points(3)}}
	for i, s := range []struct {
		name string
		xys  plotter.XYs
	}{
		{"CPU per request under load (workers + NATS)", perReq},
		{"idle CPU per held key, per second (workers + NATS)", idle},
	} {
		l, pts, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		l.Color, pts.Color, pts.Shape, l.Dashes = colors[i], colors[i], shapes[i], dashes[i]
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	if err := p.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("plot: write %s: %w", path, err)
	}
	return nil
}
