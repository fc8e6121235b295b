package logstream

import (
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// What an app writes is shown, never obeyed: an escape sequence, a NUL, a carriage return
// that would overwrite the line, bytes that are not UTF-8, a C1 control.
func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, tabs\tstay, and ünïcode": "plain text, tabs\tstay, and ünïcode",
		"\x1b[31mred\x1b[0m":                  `\x1b[31mred\x1b[0m`,
		"a NUL \x00 here":                     `a NUL \x00 here`,
		"progress 10%\rprogress 100%":         `progress 10%\rprogress 100%`,
		"bad \xff\xfe bytes":                  `bad \xff\xfe bytes`,
		"c1 \u009b31m":                        `c1 \u009b31m`,
		"bell \a del \x7f":                    `bell \x07 del \x7f`,
		`a\b path`:                            `a\b path`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestQueryRoundTripAndNames(t *testing.T) {
	q := Query{Formation: "shop", Service: "web", Instance: "shop-web-abc-0", Tail: 50, Since: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Follow: true}
	got, err := ParseQuery(q.Values())
	if err != nil || got != q {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []url.Values{
		{},
		{"formation": {"../../etc"}},
		{"formation": {"shop"}, "service": {"web/../x"}},
		{"formation": {"shop"}, "tail": {"-1"}},
		{"formation": {"shop"}, "since": {"yesterday"}},
	} {
		if _, err := ParseQuery(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	if got, _ := ParseQuery(url.Values{"formation": {"shop"}, "tail": {"99999999"}}); got.Tail != MaxTail {
		t.Errorf("tail not capped: %d", got.Tail)
	}
}

func TestAuthorized(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/logs", nil)
	if Authorized(r, "t0ken") {
		t.Error("no header authorized")
	}
	r.Header.Set("Authorization", "Bearer wrong")
	if Authorized(r, "t0ken") {
		t.Error("a wrong token authorized")
	}
	r.Header.Set("Authorization", "Bearer t0ken")
	if !Authorized(r, "t0ken") || Authorized(r, "") {
		t.Error("the token refused, or an empty one accepted")
	}
}
