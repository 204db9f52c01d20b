package ztoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/ociseek/ociseek/ztoc/ztoctest"
)

// TestCodecFixtures decodes every reference zTOC, compares what it says with
// the fixture's expectation (every field, every entry, every window hash)
// and re-encodes it byte for byte.
func TestCodecFixtures(t *testing.T) {
	for _, f := range ztoctest.Fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			b := f.Ztoc(t)
			z, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			checkInfo(t, z.Info(b), f)
			out, err := Marshal(z)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(out, b) {
				t.Fatalf("Marshal(Unmarshal(b)) differs from b: %d bytes vs %d, first difference at %d",
					len(out), len(b), firstDiff(out, b))
			}
		})
	}
}

// checkInfo compares the Info document, as JSON values, with the fixture's
// expectation minus what a zTOC cannot tell (file names of the fixture,
// layer digest and media type, file contents).
func checkInfo(t *testing.T, info *Info, f ztoctest.Fixture) {
	t.Helper()
	e := f.Expect
	if e.ZtocDigest != info.ZtocDigest || e.ZtocSize != info.ZtocSize {
		t.Errorf("ztoc digest/size %s/%d, want %s/%d", info.ZtocDigest, info.ZtocSize, e.ZtocDigest, e.ZtocSize)
	}
	info.LayerDigest, info.LayerMediaType = e.LayerDigest, e.LayerMediaType
	for i := range e.TOC {
		e.TOC[i].ContentSHA256 = ""
	}
	want, got := jsonValue(t, e), jsonValue(t, info)
	delete(want, "layer")
	delete(want, "ztoc")
	if reflect.DeepEqual(got, want) {
		return
	}
	// Narrow the report down to the first differing key or entry.
	for k, wv := range want {
		if gv := got[k]; !reflect.DeepEqual(gv, wv) {
			if wl, ok := wv.([]any); ok {
				gl, _ := gv.([]any)
				for i := range wl {
					if i >= len(gl) || !reflect.DeepEqual(gl[i], wl[i]) {
						t.Errorf("%s[%d]: got %v, want %v", k, i, at(gl, i), wl[i])
						break
					}
				}
			}
			t.Errorf("%s differs (got %d chars, want %d)", k, len(jsonText(gv)), len(jsonText(wv)))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected key %q", k)
		}
	}
}

func at(l []any, i int) any {
	if i < len(l) {
		return l[i]
	}
	return "<missing>"
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonValue(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// mustInvalid fails unless err is non-nil and wraps ErrInvalid.
func mustInvalid(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error for invalid input")
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v does not wrap ErrInvalid", err)
	}
}

// TestModelRoundTrip encodes synthetic models (including a non-UTC time
// zone, nanoseconds and PAX records) and checks that decoding gives the
// same document and re-encoding the same bytes.
func TestModelRoundTrip(t *testing.T) {
	tokyo := time.FixedZone("", 9*3600)
	zoned := validGzipZtoc()
	zoned.TOC[1].ModTime = time.Date(2023, 5, 6, 16, 8, 9, 123456789, tokyo)
	for name, z := range map[string]*Ztoc{
		"gzip": validGzipZtoc(), "tar": validTarZtoc(), "zoned": zoned, "bench": benchZtoc(2000),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := Marshal(z)
			if err != nil {
				t.Fatal(err)
			}
			z2, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := jsonText(z2.Info(b)), jsonText(z.Info(b)); got != want {
				t.Fatalf("decoded document differs:\n%s\n%s", got, want)
			}
			if b2, err := Marshal(z2); err != nil || !bytes.Equal(b2, b) {
				t.Fatalf("re-encoding differs (err %v)", err)
			}
		})
	}
	if mt, _ := zoned.TOC[1].ModTime.MarshalText(); string(mt) != "2023-05-06T16:08:09.123456789+09:00" {
		t.Fatalf("mod_time text %s", mt)
	}
}
