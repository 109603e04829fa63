package reflexupload

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// uploadMetrics are the module's Prometheus metrics. They are process-wide,
// so counts carry over config reloads, and are registered in the registry of
// every config that uses the module. No label names an upload, a path or a
// client.
type uploadMetrics struct {
	uploads  *prometheus.CounterVec   // by kind and result
	bytes    *prometheus.CounterVec   // by kind
	inFlight *prometheus.GaugeVec     // by kind
	duration *prometheus.HistogramVec // by kind and result
}

var (
	metrics     uploadMetrics
	metricsOnce sync.Once
)

func initMetrics() {
	const ns, sub = "caddy", "reflex_upload"
	metrics = uploadMetrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "uploads_total",
			Help: "Uploads that ended, by kind (multipart, tus) and result (done, error, cancelled).",
		}, []string{"kind", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "received_bytes_total",
			Help: "Request body bytes received by uploads, by kind.",
		}, []string{"kind"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "uploads_in_flight",
			Help: "Uploads being received now, by kind.",
		}, []string{"kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "upload_duration_seconds",
			Help:    "How long uploads took, from the first byte read to the answer, by kind and result.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10), // 10ms to about 44 minutes
		}, []string{"kind", "result"}),
	}
}

// registerMetrics adds the metrics to a config's registry (once per
// registry: several handlers of one config share them).
func registerMetrics(reg prometheus.Registerer) error {
	metricsOnce.Do(initMetrics)
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metrics.uploads, metrics.bytes, metrics.inFlight, metrics.duration} {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
