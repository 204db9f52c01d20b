package redact

import (
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
)

func TestErrorHidesQueries(t *testing.T) {
	inner := &url.Error{Op: "Get", URL: "https://bucket.example/blob?X-Amz-Signature=secret", Err: io.ErrUnexpectedEOF}
	err := Error(inner)
	if strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "?REDACTED") {
		t.Errorf("redacted error %q", err)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error("the wrapped error is lost")
	}
	if Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
	if got := Text(`body: "https://h/p?sig=1" and http://x/y?z`); strings.Contains(got, "sig=1") || strings.Contains(got, "?z") {
		t.Errorf("Text = %q", got)
	}
	if got := URL("https://u:p@h/p?sig=1#frag"); got != "https://h/p?REDACTED" {
		t.Errorf("URL = %q", got)
	}
}
