-- POST /api/<col>: one document per request, a unique _id per thread and request.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local threads, counter = 0, 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"_id":"t%d-%d","name":"user %d","age":%d,"tags":["a","b"],"active":true}',
    tid, counter, counter, counter % 90)
  return wrk.format(nil, nil, nil, body)
end
