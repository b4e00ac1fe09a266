// Validates Prometheus Operator objects (JSON array on stdin) against the CRDs' OpenAPI
// schemas as compiled in @kubernetes-models/prometheus-operator. Prints a JSON array with
// "" for each valid object, else the validation message. Used by tests/helm/test_helm.py.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { PrometheusRule, ServiceMonitor };
const objects = JSON.parse(readFileSync(0, "utf8"));
const verdicts = objects.map((obj) => {
  const Model = models[obj.kind];
  if (!Model) return `no schema for kind ${obj.kind}`;
  try {
    new Model(obj).validate();
    return "";
  } catch (e) {
    return e.message;
  }
});
process.stdout.write(JSON.stringify(verdicts));
