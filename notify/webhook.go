package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/portwatchd/portwatchd/policy"
)

// DefaultTimeout bounds one webhook request when the config sets none.
const DefaultTimeout = 10 * time.Second

// maxRetryAfter bounds how long a Retry-After header can hold a queue.
const maxRetryAfter = time.Hour

// webhook delivers batches to one HTTP endpoint in one format.
type webhook struct {
	hook   policy.Webhook
	target *url.URL // the URL to POST to (format-specific path applied)
	format formatter
	client *http.Client
	redact *strings.Replacer
	now    func() time.Time
	// posted holds the ids of events already posted in a message of a
	// delivery split into several, for its retries (see Notify).
	posted *accepted
}

// transport is shared by the webhooks of one Dispatcher: TLS is verified,
// proxies come from the environment (loopback is never proxied).
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	t.MaxIdleConnsPerHost = 2
	return t
}

// newWebhook checks h and builds its client. Errors name the sink and never
// contain the URL.
func newWebhook(h policy.Webhook, rt http.RoundTripper) (*webhook, error) {
	f, ok := formats[h.Format]
	if !ok {
		return nil, fmt.Errorf("webhook %s: unknown format %q", h.Name, h.Format)
	}
	if h.URL == "" {
		return nil, fmt.Errorf("webhook %s: no url", h.Name)
	}
	u, err := url.Parse(h.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("webhook %s: url is not an absolute http(s) URL", h.Name)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !h.Insecure && !policy.IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("webhook %s: plain http is only allowed to loopback; use https or set insecure: true", h.Name)
		}
	default:
		return nil, fmt.Errorf("webhook %s: url scheme must be https or http", h.Name)
	}
	if h.Timeout <= 0 {
		h.Timeout = DefaultTimeout
	}
	if h.Format == "ntfy" {
		if _, topic := ntfySplit(*u, h.Topic); topic == "" {
			return nil, fmt.Errorf("webhook %s: ntfy needs a topic (the url's last path segment, or topic)", h.Name)
		}
	}
	target := *u
	if f.path != nil {
		target = f.path(*u, h)
	}
	w := &webhook{
		hook:   h,
		target: &target,
		format: f,
		redact: redactor(h),
		now:    time.Now,
		posted: newAccepted(),
		client: &http.Client{
			Transport: rt,
			Timeout:   h.Timeout,
			// A redirect is a failure: following it could send alerts (and
			// signatures) somewhere the config did not name.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	return w, nil
}

// redactor replaces every secret part of h's URL, and the secret, with
// placeholders.
func redactor(h policy.Webhook) *strings.Replacer {
	var pairs []string
	add := func(s, with string) {
		if len(s) >= 4 {
			pairs = append(pairs, s, with)
		}
	}
	add(h.URL, "<redacted url>")
	if u, err := url.Parse(h.URL); err == nil {
		if u.RawQuery != "" {
			add(u.RawQuery, "<redacted>")
		}
		if u.User != nil {
			add(u.User.String(), "<redacted>")
			if p, ok := u.User.Password(); ok {
				add(p, "<redacted>")
			}
		}
		if u.Path != "" && u.Path != "/" {
			add(u.EscapedPath(), "<redacted path>")
			add(u.Path, "<redacted path>")
		}
	}
	if len(h.Secret) > 0 {
		s := string(h.Secret)
		add(s, "<redacted secret>")
		add(strings.TrimSpace(s), "<redacted secret>")
	}
	// Longest first, so that the whole URL wins over its parts.
	for i := 0; i < len(pairs); i += 2 {
		for j := i + 2; j < len(pairs); j += 2 {
			if len(pairs[j]) > len(pairs[i]) {
				pairs[i], pairs[j] = pairs[j], pairs[i]
				pairs[i+1], pairs[j+1] = pairs[j+1], pairs[i+1]
			}
		}
	}
	return strings.NewReplacer(pairs...)
}

// deliveryError is a failed delivery. Its text never holds the URL or the
// secret; it may quote the receiver's answer, unescaped.
type deliveryError struct {
	msg        string
	status     int           // HTTP status, 0 for network errors
	retryAfter time.Duration // from Retry-After, 0 when absent
}

func (e *deliveryError) Error() string { return e.msg }

// RetryAfter returns how long the receiver asked us to wait, or 0.
func retryAfterOf(err error) time.Duration {
	var de *deliveryError
	if errors.As(err, &de) {
		return de.retryAfter
	}
	return 0
}

// deliveryID is the Standard Webhooks message id of a batch. It is derived
// from the event ids, so it is the same on every retry and after a restart.
func deliveryID(events []Event) string {
	h := sha256.New()
	for _, ev := range events {
		io.WriteString(h, ev.ID)
		h.Write([]byte{0})
	}
	return "msg_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// sign returns the Standard Webhooks signature header value.
func sign(secret []byte, id string, ts int64, body []byte) string {
	secret = bytes.TrimSpace(secret)
	// Standard Webhooks secrets are written "whsec_<base64>"; the key is the
	// decoded part. Any other secret is used as is.
	if s, ok := bytes.CutPrefix(secret, []byte("whsec_")); ok {
		if k, err := base64.StdEncoding.DecodeString(string(s)); err == nil {
			secret = k
		}
	}
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "%s.%d.", id, ts)
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Notify sends events: as one message, or, for a chat format whose limit
// they exceed, as several (formatter.split), in order. retry is true for
// 408, 429, 5xx and network errors.
//
// Each message is one request, tried as a unit. When one fails after others
// were accepted, the events of the accepted ones are remembered, and the
// retry of the delivery (the same events, maybe with more) leaves them out,
// so that no message is posted twice.
func (w *webhook) Notify(ctx context.Context, events []Event) (bool, error) {
	if w.format.split == nil {
		return w.post(ctx, events)
	}
	w.posted.reserve(len(events))
	var rest []Event
	for _, ev := range events {
		if !w.posted.has(ev.ID) {
			rest = append(rest, ev)
		}
	}
	if len(rest) == 0 {
		return false, nil
	}
	for _, part := range w.format.split(rest) {
		if retry, err := w.post(ctx, part); err != nil {
			return retry, err
		}
		w.posted.add(ids(part)...)
	}
	return false, nil
}

// post sends events as one message.
func (w *webhook) post(ctx context.Context, events []Event) (bool, error) {
	body, err := w.format.render(events, w.hook, w.now())
	if err != nil {
		return false, fmt.Errorf("webhook %s: build %s payload: %w", w.hook.Name, w.hook.Format, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.target.String(), bytes.NewReader(body))
	if err != nil {
		return false, &deliveryError{msg: fmt.Sprintf("webhook %s: build request: %s", w.hook.Name, w.redact.Replace(stripURL(err)))}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "portwatchd")
	if w.hook.Format == "generic" {
		id := deliveryID(events)
		ts := w.now().Unix()
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		if len(w.hook.Secret) > 0 {
			req.Header.Set("webhook-signature", sign(w.hook.Secret, id, ts, body))
		}
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return true, &deliveryError{msg: fmt.Sprintf("webhook %s: %s", w.hook.Name, w.redact.Replace(stripURL(err)))}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // reuse the connection
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return false, nil
	}
	e := &deliveryError{status: code}
	// Raw (valid UTF-8, redacted, cut): whoever shows the error escapes
	// it, once (the journal's fields, the log's formatter, notify-test).
	detail := strings.TrimSpace(string(bytes.ToValidUTF8(snippet, nil)))
	detail = truncate(w.redact.Replace(detail), 200)
	e.msg = fmt.Sprintf("webhook %s: HTTP %d %s", w.hook.Name, code, http.StatusText(code))
	if code >= 300 && code < 400 {
		e.msg += " (redirects are not followed; fix the url)"
	} else if detail != "" {
		e.msg += ": " + detail
	}
	retry := code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
	if retry {
		e.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), w.now())
	}
	return retry, e
}

// stripURL returns the text of err without the URL that *url.Error carries.
func stripURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		msg := ue.Err.Error()
		if ue.Timeout() && !strings.Contains(msg, "timeout") && !strings.Contains(msg, "deadline") {
			msg += " (timeout)"
		}
		return msg
	}
	return err.Error()
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d < 0 {
		return 0
	}
	if d > maxRetryAfter {
		d = maxRetryAfter
	}
	return d
}
