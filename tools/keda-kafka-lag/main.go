// keda-kafka-lag runs KEDA's own Kafka scaler (github.com/kedacore/keda/v2/pkg/scalers, the code
// the KEDA operator runs) once against a cluster, with a ScaledObject trigger's metadata, and
// prints what KEDA would feed the HPA as one JSON line:
//
//	{"metric": "s0-kafka-iris-requests", "lag": 4000, "active": true, "target": 2000}
//
// Usage: keda-kafka-lag key=value ... (the trigger's metadata: bootstrapServers, consumerGroup,
// topic, lagThreshold, activationLagThreshold, offsetResetPolicy, allowIdleConsumers, ...).
// tests/test_keda_scaler.py builds it (make keda-scaler) and compares it with consumers/keda_lag.py.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
)

func main() {
	metadata := map[string]string{}
	for _, arg := range os.Args[1:] {
		key, value, ok := strings.Cut(arg, "=")
		if !ok || key == "" {
			fmt.Fprintf(os.Stderr, "keda-kafka-lag: expected key=value, got %q\n", arg)
			os.Exit(2)
		}
		metadata[key] = value
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	config := &scalersconfig.ScalerConfig{
		ScalableObjectName:      "iris-worker",
		ScalableObjectNamespace: "iris",
		ScalableObjectType:      "ScaledObject",
		GlobalHTTPTimeout:       30 * time.Second,
		TriggerName:             "kafka",
		TriggerType:             "kafka",
		TriggerMetadata:         metadata,
		ResolvedEnv:             map[string]string{},
		AuthParams:              map[string]string{},
		TriggerIndex:            0,
	}
	scaler, err := scalers.NewKafkaScaler(ctx, config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "keda-kafka-lag: KEDA refused the trigger: %v\n", err)
		os.Exit(1)
	}
	defer scaler.Close(ctx)
	specs := scaler.GetMetricSpecForScaling(ctx)
	name := specs[0].External.Metric.Name
	values, active, err := scaler.GetMetricsAndActivity(ctx, name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "keda-kafka-lag: KEDA could not read the lag: %v\n", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]any{
		"metric": name,
		"lag":    values[0].Value.MilliValue() / 1000,
		"active": active,
		"target": specs[0].External.Target.AverageValue.Value(),
	})
	fmt.Println(string(out))
}
