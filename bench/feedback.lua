-- wrk script: POST feedback events to /v1/feedback. WRK_BATCH=N sends N events per request.
local batch = tonumber(os.getenv("WRK_BATCH") or "1")
local counter = 0
wrk.method = "POST"
wrk.path = "/v1/feedback"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Gateway-App"] = "bench-feedback"

request = function()
  local events = {}
  for i = 1, batch do
    counter = counter + 1
    events[i] = string.format(
      '{"request_id":"req-%d","name":"rating","value":%d,"metadata":{"screen":"chat"}}',
      counter, counter % 5 + 1)
  end
  local body = batch == 1 and events[1] or ("[" .. table.concat(events, ",") .. "]")
  return wrk.format(nil, nil, nil, body)
end
