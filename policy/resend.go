package policy

// resendInterval reads resend_interval into w: how often an alertmanager
// sink re-sends the alerts still firing, so that an Alertmanager restart
// (it keeps alerts in memory only) gets them back, and their endsAt keeps
// them firing only while portwatchd runs. Other formats send each event
// once and take no resend_interval.
func resendInterval(d *decoder, by map[string]field, w *Webhook) {
	f, ok := by["resend_interval"]
	switch {
	case ok && w.Format != "" && w.Format != "alertmanager":
		d.errorf(f.k, "resend_interval: only the alertmanager format re-sends its alerts")
	case ok:
		if v, ok := d.duration(f, MinResendInterval); ok {
			w.ResendInterval = v
		}
	case w.Format == "alertmanager":
		w.ResendInterval = DefaultResendInterval
	}
}
