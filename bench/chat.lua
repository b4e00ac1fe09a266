-- wrk script: POST an OpenAI chat completion (model gpt-4o-mini, 2 messages).
-- Environment: WRK_STREAM=1 asks for an SSE stream with usage; WRK_APP sets X-Gateway-App
-- (the gateway records it in the `app` column; the other targets ignore it); WRK_KEY is the
-- API key sent (a gateway key for the gateway-keys targets).
-- WRK_DIALECT=anthropic POSTs the same conversation to /v1/messages (Anthropic's shape),
-- which the gateway translates for the OpenAI-kind upstream.
-- WRK_CACHE=hit sends X-Gateway-Cache: on with the same request every time (after the
-- first, answered by the response cache); WRK_CACHE=miss sends it too, but each request
-- asks something no request asked before (WRK_NONCE and a per-thread counter in the
-- question), so each is a miss whose answer is stored.
local stream = os.getenv("WRK_STREAM") == "1"
local anthropic = os.getenv("WRK_DIALECT") == "anthropic"
local app = os.getenv("WRK_APP")
local key = os.getenv("WRK_KEY")
local cache = os.getenv("WRK_CACHE") or ""
local nonce = os.getenv("WRK_NONCE") or ""
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. ((key and key ~= "") and key or "sk-bench-client")
if app and app ~= "" then wrk.headers["X-Gateway-App"] = app end
wrk.body = '{"model":"gpt-4o-mini","messages":['
  .. '{"role":"system","content":"You are a helpful assistant. Answer briefly."},'
  .. '{"role":"user","content":"What is the capital of France?"}],'
  .. '"temperature":0.2,"max_tokens":64'
  .. (stream and ',"stream":true,"stream_options":{"include_usage":true}' or '')
  .. '}'
if anthropic then
  wrk.path = "/v1/messages"
  wrk.headers["anthropic-version"] = "2023-06-01"
  wrk.body = '{"model":"gpt-4o-mini","system":"You are a helpful assistant. Answer briefly.",'
    .. '"messages":[{"role":"user","content":"What is the capital of France?"}],'
    .. '"temperature":0.2,"max_tokens":64' .. (stream and ',"stream":true' or '') .. '}'
end
if cache ~= "" then wrk.headers["X-Gateway-Cache"] = "on" end
if cache == "miss" then
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
  end
  local n = 0
  local head, tail = wrk.body:match('^(.*What is the capital of France%?)(.*)$')
  function request()
    n = n + 1
    return wrk.format(nil, nil, nil, head .. " #" .. nonce .. "-" .. tid .. "-" .. n .. tail)
  end
end
