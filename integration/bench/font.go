package bench

import (
	"image"
	"image/color"
	"strings"
)

// glyphs is a 3×5 pixel font for the chart's labels (the standard library
// has no font rendering): each glyph is 15 bits, rows top first, "1" for
// ink. Lower case is drawn as upper case; an unknown rune as a space.
var glyphs = map[rune]string{
	'0': "111101101101111", '1': "010110010010111", '2': "111001111100111", '3': "111001111001111",
	'4': "101101111001001", '5': "111100111001111", '6': "111100111101111", '7': "111001001001001",
	'8': "111101111101111", '9': "111101111001111",
	'A': "010101111101101", 'B': "110101110101110", 'C': "011100100100011", 'D': "110101101101110",
	'E': "111100110100111", 'F': "111100110100100", 'G': "011100101101011", 'H': "101101111101101",
	'I': "111010010010111", 'J': "001001001101010", 'K': "101101110101101", 'L': "100100100100111",
	'M': "101111111101101", 'N': "110101101101101", 'O': "010101101101010", 'P': "110101110100100",
	'Q': "010101101110011", 'R': "110101110101101", 'S': "011100010001110", 'T': "111010010010010",
	'U': "101101101101111", 'V': "101101101101010", 'W': "101101111111101", 'X': "101101010101101",
	'Y': "101101010010010", 'Z': "111001010100111",
	'.': "000000000000010", '-': "000000111000000", '/': "001001010100100", '(': "010100100100010",
	')': "010001001001010", ':': "000010000010000", '+': "000010111010000", '%': "101001010100101",
	',': "000000000010100", '×': "000101010101000", '>': "100010001010100", '=': "000111000111000",
}

// textWidth is the width in pixels of s drawn at scale.
func textWidth(s string, scale int) int {
	return len([]rune(s)) * 4 * scale
}

// drawText draws s with its top left corner at (x, y), each font pixel a
// scale×scale square.
func drawText(img *image.RGBA, x, y, scale int, s string, c color.Color) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if ok {
			for i, bit := range g {
				if bit != '1' {
					continue
				}
				px, py := x+(i%3)*scale, y+(i/3)*scale
				fillRect(img, px, py, px+scale, py+scale, c)
			}
		}
		x += 4 * scale
	}
}

// fillRect fills the rectangle [x0, x1) × [y0, y1) with c.
func fillRect(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	r := image.Rect(x0, y0, x1, y1).Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.Set(x, y, c)
		}
	}
}
