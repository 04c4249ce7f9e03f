wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and #body > 0 then wrk.body = body end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
if wrk.method == "POST" then wrk.headers["Content-Type"] = "application/json" end
