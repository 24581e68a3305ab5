"""Set the robot's task (what the policy is asked to do) on the running task node.

    python -m clamp_bringup.set_task "put the cube in the bowl" [--node /task] [--timeout S]

The same as `ros2 param set /task task "..."`; says clearly when no task node runs (start the
`policy` or `record` mode of a hardware profile).
"""

from __future__ import annotations

import argparse
import sys


def set_task(task: str, node_name: str = "/task", timeout: float = 5.0, context=None) -> str:
    """Set `task` on the task node; returns "" or the error text."""
    import rclpy
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node = rclpy.create_node("clamp_set_task", context=context, start_parameter_services=False)
    try:
        client = node.create_client(SetParameters, f"{node_name}/set_parameters")
        if not client.wait_for_service(timeout_sec=timeout):
            return f"no task node at {node_name} (is the robot's policy or record mode running?)"
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=task)
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name="task", value=value)]))
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec=timeout)
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0.5)
        if not future.done():
            return f"{node_name} did not answer within {timeout:.0f} s"
        result = future.result().results[0]
        return "" if result.successful else result.reason
    finally:
        node.destroy_node()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clamp_bringup.set_task", description=__doc__.splitlines()[0])
    ap.add_argument("task", help="the task text, quoted")
    ap.add_argument("--node", default="/task")
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args(argv)
    import rclpy

    rclpy.init()
    try:
        err = set_task(a.task, a.node, a.timeout)
    finally:
        rclpy.shutdown()
    print(err or f"task set: {a.task!r}", file=sys.stderr if err else sys.stdout)
    return 1 if err else 0


if __name__ == "__main__":
    sys.exit(main())
