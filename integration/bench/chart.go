package bench

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
)

// Chart geometry, in pixels.
const (
	chartWidth  = 960
	chartMargin = 16
	labelWidth  = 330 // left column with the bar names
	barHeight   = 18
	barGap      = 6
	textScale   = 2
)

// Bar colours by snapshotter: overlayfs grey, ociseek blue, another one
// orange.
var (
	colorOverlay = color.RGBA{0x90, 0x90, 0x90, 0xff}
	colorOciseek = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	colorOther   = color.RGBA{0xff, 0x7f, 0x0e, 0xff}
	colorText    = color.RGBA{0x20, 0x20, 0x20, 0xff}
)

// chartBar is one bar: its label, value in seconds, and colour.
type chartBar struct {
	label string
	value float64
	color color.Color
}

// chartPanel is one link's bars, scaled to their own maximum.
type chartPanel struct {
	title string
	bars  []chartBar
}

// Chart draws the results as a PNG: for each link, horizontal bars of the
// median first output, 128 MiB read and time to a complete image, per
// snapshotter.
func (r Results) Chart() ([]byte, error) {
	var panels []chartPanel
	for _, link := range r.Cfg.Links {
		p := chartPanel{title: linkTitle(link) + ", medians in seconds"}
		for _, mi := range []int{0, 2, 4} {
			mt := metrics[mi]
			for _, sn := range r.Cfg.Snapshotters() {
				s := r.summarize(link, sn, mt)
				if s.n == 0 {
					continue
				}
				p.bars = append(p.bars, chartBar{label: sn + " " + shortName(mi), value: s.med, color: snColor(sn)})
			}
		}
		panels = append(panels, p)
	}
	return drawChart(panels)
}

// shortName is the chart's name of metrics[i].
func shortName(i int) string {
	switch i {
	case 0:
		return "first output"
	case 2:
		return "128 MiB read"
	}
	return "image complete"
}

func snColor(sn string) color.Color {
	switch sn {
	case Overlay:
		return colorOverlay
	case Ociseek:
		return colorOciseek
	}
	return colorOther
}

// drawChart renders the panels one below the other.
func drawChart(panels []chartPanel) ([]byte, error) {
	lineH := 5*textScale + 10
	height := chartMargin
	for _, p := range panels {
		height += lineH + len(p.bars)*(barHeight+barGap) + chartMargin
	}
	img := image.NewRGBA(image.Rect(0, 0, chartWidth, height))
	fillRect(img, 0, 0, chartWidth, height, color.White)
	y := chartMargin
	for _, p := range panels {
		drawText(img, chartMargin, y, textScale, p.title, colorText)
		y += lineH
		maxV := 0.0
		for _, b := range p.bars {
			maxV = max(maxV, b.value)
		}
		x0 := chartMargin + labelWidth
		span := chartWidth - x0 - chartMargin - 90 // room for the value
		for _, b := range p.bars {
			drawText(img, chartMargin, y+(barHeight-5*textScale)/2, textScale, b.label, colorText)
			w := 1
			if maxV > 0 {
				w = max(1, int(b.value/maxV*float64(span)))
			}
			fillRect(img, x0, y, x0+w, y+barHeight, b.color)
			drawText(img, x0+w+6, y+(barHeight-5*textScale)/2, textScale, num(b.value), colorText)
			y += barHeight + barGap
		}
		y += chartMargin
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode chart: %w", err)
	}
	return buf.Bytes(), nil
}
