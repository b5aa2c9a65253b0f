# Fetch users from objcached with Dalli (Debian: ruby-dalli).
#
#     ruby example.rb [ADDRESS]     ADDRESS: 127.0.0.1:11311 (default) or
#                                   /path/to.sock
#
# NOT SERVED WITH DEBIAN 12'S DALLI: its 3.0.6 speaks only memcached's binary
# protocol, which objcached does not answer. objcached does answer the meta
# protocol (mg, ms, md, mn), which Dalli 4.x speaks by default and Dalli 3.2+
# with protocol: :meta in the options below; such a Dalli is expected to run
# this program, but none is tested here. See docs/client.md.
require 'dalli'
require 'json'

addr = (ARGV[0] || '127.0.0.1:11311').delete_prefix('unix:')
# raw: true stores and returns strings as they are (no Ruby Marshal).
client = Dalli::Client.new(addr, raw: true, socket_timeout: 6, socket_max_failures: 1)
keys = ['User:1', 'User:2', 'User:999999']
found = client.get_multi(*keys)
keys.each do |key|
  if found.key?(key)
    user = JSON.parse(found[key])
    puts "#{key} = #{user['name']} <#{user['email']}>"
  else
    puts "#{key}: not found"
  end
end
